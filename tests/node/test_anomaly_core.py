"""The anomaly model's pure core: features on real bytes, the accumulator, each tier of the
judge, the streaming check and the baseline's state blob (issue 14)."""

from __future__ import annotations

import base64
import random
import zlib

import pytest
from corestate.node.core import anomaly as an


def _blocks(data: bytes) -> list[bytes]:
    return [data[o:o + n] for o, n in an.sample_plan(len(data))]


def _text(rng: random.Random, size: int) -> bytes:
    words = [b"backup", b"report", b"meeting", b"the", b"and", b"budget", b"notes", b"of",
             b"quarter", b"plan", b"team", b"2026", b"draft", b"review", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def _cipher(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def test_sample_plan_reads_at_most_64_kib_and_covers_the_file() -> None:
    assert an.sample_plan(0) == []
    assert an.sample_plan(10) == [(0, 10)]
    plan = an.sample_plan(10 * 2**30)
    assert len(plan) == an.MAX_BLOCKS and plan[0] == (0, an.BLOCK)
    assert plan[-1][0] + plan[-1][1] == 10 * 2**30
    assert sum(n for _, n in plan) <= 64 * 1024


def test_entropy_and_chi2_separate_text_compression_and_ciphertext() -> None:
    rng = random.Random(1)
    text = an.probe(_blocks(_text(rng, 200_000)))
    cipher = an.probe(_blocks(_cipher(rng, 200_000)))
    deflated = an.probe(_blocks(b"PK\x03\x04" + zlib.compress(_text(rng, 2_000_000), 6)))
    assert text.text and text.magic == "text" and text.entropy < 5.5
    assert cipher.random_like and cipher.entropy > 7.95 and cipher.chi2 < 330
    assert deflated.magic == "zip" and not deflated.random_like
    assert deflated.entropy > 7.5 and deflated.chi2 > 330


def test_magic_table_and_extension_agreement() -> None:
    assert an.detect_magic(b"%PDF-1.7\n") == "pdf"
    assert an.detect_magic(b"\x89PNG\r\n\x1a\n....") == "png"
    assert an.detect_magic(b"\x00" * 257 + b"ustar\x0000") == "tar"
    assert an.detect_magic(b"\x00\x00\x00\x18ftypmp42") == "mp4"
    assert an.detect_magic(bytes(range(256))) == ""
    assert an.extension_agrees("docx", "zip") is True
    assert an.extension_agrees("docx", "") is False
    assert an.extension_agrees("txt", "text") is True
    assert an.extension_agrees("weird", "") is None


def test_base64_and_ransom_notes() -> None:
    rng = random.Random(2)
    masked = base64.b64encode(_cipher(rng, 60_000))
    p = an.probe(_blocks(masked))
    assert p.base64 and not p.random_like
    assert not an.probe(_blocks(_text(rng, 60_000))).base64
    note = b"All your files are encrypted. To decrypt them pay 0.1 bitcoin to wallet ..."
    assert an.probe([note]).note_words >= 3


def test_probe_record_round_trips_and_refuses_junk() -> None:
    p = an.probe(_blocks(_text(random.Random(3), 9000)))
    assert an.ContentProbe.from_record(p.to_record()).magic == p.magic
    with pytest.raises(ValueError):
        an.ContentProbe.from_record(["x"])


# -- the accumulator and the judge, on observations made from real bytes --

def _obs(path: str, change: str, old: bytes | None, new: bytes | None,
         kept: float | None = None) -> an.FileObs:
    po = an.probe(_blocks(old)) if old is not None else None
    pn = an.probe(_blocks(new)) if new is not None else None
    raw = len(new) if new is not None else 0
    return an.FileObs(path=path, change=change,
                      size_old=len(old) if old else 0, size_new=raw, old=po, new=pn,
                      new_bytes=raw, new_compressed=len(zlib.compress(new, 1)) if new else 0,
                      kept_share=kept, content_id=bytes(8) if new and len(new) < 2000 else b"")


def _benign(rng: random.Random, acc: an.Accumulator, n: int) -> None:
    for i in range(n):
        old = _text(rng, 20_000)
        for s in acc.add(_obs(f"docs/d{i}/notes{i}.txt", "changed", old,
                              old[:15_000] + _text(rng, 6_000), kept=0.7)):
            assert not s.suspicious, s


def _warm_baseline(rng: random.Random, n: int = 20) -> an.Baseline:
    b = an.Baseline()
    for h in range(n):
        acc = an.Accumulator(files_before=500)
        _benign(rng, acc, 5)
        b.learn(acc.features(hour=h % 24, weekday=h // 24))
    return b


def _attack(rng: random.Random, acc: an.Accumulator, n: int, check: an.StreamCheck | None = None
            ) -> int | None:
    """Encrypt n files with rename and a note per folder; return after how many encrypted
    files the stream check fired."""
    fired = None
    for i in range(n):
        old = _text(rng, 30_000)
        sigs = acc.add(_obs(f"docs/d{i}/report{i}.txt", "deleted", old, None))
        sigs += acc.add(_obs(f"docs/d{i}/report{i}.txt.locked", "added", None,
                             _cipher(rng, 30_016)))
        sigs += acc.add(_obs(f"docs/d{i}/HOW_TO_DECRYPT.txt", "added", None,
                             b"Your files are encrypted. Pay bitcoin to decrypt."))
        if check is not None and check.feed(sigs) and fired is None:
            fired = i + 1
    return fired


@pytest.mark.parametrize("use_model", [False, True])
def test_each_tier(use_model: bool) -> None:
    rng = random.Random(4)
    base = _warm_baseline(rng)
    kw = {"use_shipped": use_model}
    # ok: the usual edits
    acc = an.Accumulator(files_before=500)
    _benign(rng, acc, 6)
    v = an.judge(acc.features(hour=10), base, top=acc.top_files(), **kw)
    assert v.verdict == "ok" and v.reasons and v.score < an.SUSPECT
    # suspect: far more change than this node ever had, none of it ransomware-like
    acc = an.Accumulator(files_before=500)
    _benign(rng, acc, 300)
    v = an.judge(acc.features(hour=3), base, **kw)
    assert v.verdict == "suspect", v
    assert any("changed" in r for r in v.reasons)
    # alert: 25 files (5%) encrypted and renamed, a note in each folder
    acc = an.Accumulator(files_before=500)
    _benign(rng, acc, 4)
    _attack(rng, acc, 25)
    v = an.judge(acc.features(hour=3), base, top=acc.top_files(), **kw)
    assert v.verdict == "alert" and v.score >= an.ALERT
    text = " ".join(v.reasons)
    assert "encrypted" in text and "new extension" in text and "folders" in text
    files = v.details["files"]
    assert isinstance(files, list) and files[0]["path"].endswith(".locked")
    assert set(v.summary()) == {"verdict", "score", "reasons"}


def test_stream_check_fires_within_five_files_and_once() -> None:
    rng = random.Random(5)
    base = _warm_baseline(rng)
    acc = an.Accumulator(files_before=500)
    check = an.StreamCheck(base)
    _benign(rng, acc, 3)
    fired = _attack(rng, acc, 30, check)
    assert fired is not None and fired <= 5
    assert check.alerted and not check.feed([]) and check.suspicious >= 30


def test_cold_start_alerts_on_attack_not_on_first_import() -> None:
    rng = random.Random(6)
    cold = an.Baseline()
    acc = an.Accumulator(files_before=0)
    for i in range(400):  # the first backup: everything is new
        acc.add(_obs(f"home/f{i}.txt", "added", None, _text(rng, 5_000)))
    assert an.judge(acc.features(), cold).verdict == "ok"
    acc = an.Accumulator(files_before=400)
    _attack(rng, acc, 20)
    assert an.judge(acc.features(), cold).verdict == "alert"


def test_baseline_round_trips_and_refuses_damaged_state() -> None:
    rng = random.Random(7)
    base = _warm_baseline(rng, 15)
    blob = base.to_bytes()
    again = an.Baseline.from_bytes(blob)
    assert again.count == 15 and again.learnt == 15 and again.warm
    assert again.centre("changed") == base.centre("changed")
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 0x40
    for bad in (bytes(damaged), blob[:-30], b"", b"{\"json\": true}", b"CSANB" + b"\x00" * 40):
        with pytest.raises(an.AnomalyStateError) as e:
            an.Baseline.from_bytes(bad)
        assert e.value.hint and "fresh baseline" in e.value.hint


def test_a_rename_pairs_with_its_deletion_in_either_order() -> None:
    rng = random.Random(8)
    old, new = _text(rng, 30_000), _cipher(rng, 30_016)
    for order in ("delete-first", "add-first"):
        acc = an.Accumulator(files_before=100, known_exts=frozenset({"txt"}))
        d = _obs("a/report.txt", "deleted", old, None)
        a = _obs("a/report.txt.crypt", "added", None, new)
        sigs = acc.add(d) + acc.add(a) if order == "delete-first" else acc.add(a) + acc.add(d)
        last = sigs[-1]
        assert "renamed-extension" in last.signals and "magic-lost" in last.signals, order
        f = acc.features()
        assert f.renamed_extension == 1 and f.suspicious == 1 and f.new_ext_top == 1, order


def test_ciphertext_by_design_and_resaved_documents_are_not_suspicious() -> None:
    rng = random.Random(9)
    acc = an.Accumulator(files_before=100)
    safe = b"\x03\xd9\xa2\x9a" + _cipher(rng, 200_000)
    sig = acc.add(_obs("secrets/p.kdbx", "changed", b"\x03\xd9\xa2\x9a" + _cipher(rng, 200_000),
                       safe))
    assert not sig
    doc_old = b"PK\x03\x04" + zlib.compress(_text(rng, 600_000), 6)
    doc_new = b"PK\x03\x04" + zlib.compress(_text(rng, 620_000), 6)
    assert not any(s.suspicious for s in acc.add(_obs("d/r.docx", "changed", doc_old, doc_new,
                                                      kept=0.0)))
    # ... but the same safe renamed *into* an encrypted-looking extension from a document is
    enc = acc.add(_obs("d/plan.docx", "deleted", doc_old, None)) + acc.add(
        _obs("d/plan.docx.gpg", "added", None, _cipher(rng, 90_000)))
    assert enc and enc[-1].suspicious


def test_header_kept_and_intermittent_encryption_are_seen_against_the_old_version() -> None:
    rng = random.Random(10)
    old = _text(rng, 300_000)  # a big CSV, say
    head_kept = old[:4096] + _cipher(rng, len(old) - 4096)
    stripes = bytearray(old)
    for a in range(65536, len(old), 2 * 65536):
        stripes[a:a + 65536] = _cipher(rng, len(stripes[a:a + 65536]))
    for new, want in ((head_kept, "body-encrypted"), (bytes(stripes), "intermittent")):
        acc = an.Accumulator(files_before=10)
        (s,) = acc.add(_obs("d/x.csv", "changed", old, new, kept=0.0))
        assert want in s.signals and s.suspicious, s


def test_a_compressed_format_that_loses_its_end_of_file_structure() -> None:
    rng = random.Random(13)
    body = zlib.compress(_text(rng, 900_000), 6)
    old = b"PK\x03\x04" + body + b"PK\x05\x06" + bytes(18)  # a docx, central directory last
    assert an.probe(_blocks(old)).trailer == 1
    stripes = bytearray(old)
    for a in range(len(old) - 16384, 16384, -2 * 16384):  # every other block, the last one too
        stripes[a:a + 16384] = _cipher(rng, 16384)
    acc = an.Accumulator(files_before=10)
    (s,) = acc.add(_obs("d/report.docx", "changed", old, bytes(stripes), kept=0.0))
    assert "trailer-lost" in s.signals and s.suspicious, s
    # re-saved, the same document keeps it: not suspicious
    again = b"PK\x03\x04" + zlib.compress(_text(rng, 900_000), 6) + b"PK\x05\x06" + bytes(18)
    assert not any(s.suspicious for s in acc.add(_obs("d/other.docx", "changed", old, again,
                                                      kept=0.0)))


def test_explain_details_carry_the_numbers_and_are_plain_data() -> None:
    import json
    rng = random.Random(11)
    base = _warm_baseline(rng)
    acc = an.Accumulator(files_before=500)
    _attack(rng, acc, 12)
    v = an.judge(acc.features(hour=2, weekday=6), base, top=acc.top_files(5))
    d = json.loads(json.dumps(v.details))
    assert d["baseline"] == {"snapshots": 20, "warm": True}
    enc = next(r for r in d["reasons"] if r["code"] == "encrypted_looking")
    assert enc["value"] == 12 and enc["usual"] == 0
    assert len(d["files"]) == 5 and all(f["signals"] for f in d["files"])
    assert d["features"]["suspicious"] == 12


def test_the_baseline_keeps_a_window_of_2000_snapshots() -> None:
    base = an.Baseline()
    for i in range(2100):
        base.learn(an.Features(changed=float(i)))
    assert base.count == 2000 and base.learnt == 2100
    assert base.column("changed")[0] == 100 and base.centre("changed") == pytest.approx(1099.5)
    assert an.Baseline.from_bytes(base.to_bytes()).count == 2000


def test_model_weights_of_another_layout_are_refused() -> None:
    from corestate.node.core.anomaly.model import MODEL_FORMAT
    m = an.GlobalModel(tuple([1.0] * len(an.INPUT_NAMES)), 0.0,
                       tuple([0.0] * len(an.INPUT_NAMES)), tuple([1.0] * len(an.INPUT_NAMES)))
    assert an.GlobalModel.from_json(m.to_json()) == m
    for bad in ("{}", "not json", m.to_json().replace(f'"format": {MODEL_FORMAT}', '"format": 9'),
                m.to_json().replace('"weights": [', '"weights": [2.0, ')):
        with pytest.raises(an.AnomalyStateError):
            an.GlobalModel.from_json(bad)


def test_a_slow_attack_adds_up_over_snapshots_in_the_stream_check() -> None:
    from corestate.node.core.anomaly.judge import STREAM_ALERT_FILES, STREAM_MIN_FILES
    base = an.Baseline()
    for _ in range(30):
        base.learn(an.Features(changed=5.0))
    fresh = an.StreamCheck(base)
    assert fresh.allowance == STREAM_ALERT_FILES
    # two snapshots, each under the bar with 3 suspicious files, learnt as ok
    for _ in range(2):
        base.learn(an.Features(changed=8.0, suspicious=3.0))
    slow = an.StreamCheck(base)
    assert slow.allowance == STREAM_MIN_FILES
    one = an.FileSignals("a/x.docx", "changed", ("encrypted-looking",), 1.0)
    assert not slow.feed([one]) and slow.feed([one])


def test_base64_output_counts_only_for_a_file_that_turned_into_it() -> None:
    rng = random.Random(12)
    old = _text(rng, 3000)
    masked = old[:1500] + base64.encodebytes(_cipher(rng, 1200))  # header kept, small file
    acc = an.Accumulator(files_before=10)
    (s,) = acc.add(_obs("a/notes.txt", "changed", old, masked))
    assert "base64-output" in s.signals and s.suspicious
    # a new base64 file (a key, a mail attachment) is no signal
    assert not acc.add(_obs("a/key.asc", "added", None, base64.encodebytes(_cipher(rng, 3000))))
