"""The argument parser: every command, its options and the help that teaches them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from corestate.node.cli.anomaly import (
    cmd_advise,
    cmd_anomaly_ack,
    cmd_anomaly_explain,
    cmd_anomaly_list,
)
from corestate.node.cli.backup import cmd_backup
from corestate.node.cli.group import (
    cmd_group_create,
    cmd_group_invite,
    cmd_group_join,
    cmd_group_leave,
    cmd_group_members,
    cmd_group_remove,
    cmd_group_sync,
)
from corestate.node.cli.health import cmd_audit, cmd_health
from corestate.node.cli.inspect import cmd_check, cmd_diff, cmd_ls, cmd_snapshots, cmd_stats
from corestate.node.cli.keys import cmd_init, cmd_key_passwd
from corestate.node.cli.maintain import cmd_forget, cmd_prune, cmd_repair
from corestate.node.cli.mount import cmd_mount
from corestate.node.cli.nodecmd import (
    cmd_demo,
    cmd_node_events,
    cmd_node_info,
    cmd_node_run,
    cmd_status,
)
from corestate.node.cli.peer import cmd_peer_add, cmd_peer_list, cmd_peer_remove
from corestate.node.cli.restore import cmd_restore
from corestate.node.cli.sim import add_parser as add_sim_parser
from corestate.node.cli.target import cmd_target_add, cmd_target_list, cmd_target_remove
from corestate.node.cli.tuicmd import cmd_tui
from corestate.node.home import default_home

# -- parser -----------------------------------------------------------------------------

EPILOG = """\
examples:
  corestate init                          create a node; shows the 24-word recovery phrase once
  corestate backup ~/Documents ~/src      back up two folders (excludes: --exclude '*.tmp')
  corestate snapshots                     list snapshots
  corestate status                        peers, last and next backup, redundancy, alerts
  corestate ls latest /home/me/src        list what a snapshot holds under a path
  corestate restore latest --target /tmp/r --path /home/me/src
  corestate check --read-data             read and verify every byte in the store
  corestate forget --keep-daily 7 --keep-weekly 4 --prune --dry-run
                                          what a retention policy would forget, and why
  corestate repair                        rebuild shares lost with dead or faulty peers
  corestate health                        packs full/degraded/at risk/lost, holders, repair ETA
  corestate demo                          a guided run on a sample tree

The home is $CORESTATE_HOME or --home (default: %s). Commands that need the key read the
passphrase from --passphrase-file, $CORESTATE_PASSPHRASE, or the terminal.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corestate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="CoreState: encrypted, deduplicated backups; a peer-to-peer backup mesh.",
        epilog=EPILOG % default_home(),
    )
    from corestate import __version__
    p.add_argument("--version", action="version", version=f"corestate {__version__}")
    p.add_argument("--home", type=Path, default=None, help="the node home (default: $CORESTATE_HOME, else the folder named below)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn: Callable, help: str, key: bool = True, json_flag: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        if key:
            sp.add_argument("--passphrase-file", metavar="F", help="read the passphrase from the first line of F")
            if name != "init":
                _hsm_option(sp)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = add("init", cmd_init, "create a node home and its keys")
    sp.add_argument("--recover", action="store_true", help="rebuild the keys of an existing node from its phrase")
    sp.add_argument("--phrase-file", metavar="F", help="with --recover: read the 24 words from F")
    sp.add_argument("--hsm-module", metavar="LIB",
                    help="seal the key with a PKCS#11 token instead of a passphrase: the module "
                         "library (the passphrase is then the token's user PIN)")
    sp.add_argument("--hsm-token", metavar="LABEL", help="with --hsm-module: the token's label")
    sp.add_argument("--generation", type=int, default=0, metavar="G",
                    help="with --recover: use identity generation G (after this node's old identity was "
                         "removed from its group, e.g. a stolen laptop: recover with the next one, then "
                         "`group join` with a new invite; the data keys stay the same)")
    sp.add_argument("--peer", metavar="MULTIADDR",
                    help="with --recover: a group member's address; this node's records, snapshots "
                         "and share placements come back from the group")

    key = sub.add_parser("key", help="manage the node key")
    ksub = key.add_subparsers(dest="key_command", metavar="COMMAND")
    kp = ksub.add_parser("passwd", help="change the passphrase that seals the key")
    kp.set_defaults(fn=cmd_key_passwd)
    kp.add_argument("--passphrase-file", metavar="F", help="the current passphrase")
    kp.add_argument("--new-passphrase-file", metavar="F", help="the new passphrase")
    kp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("backup", cmd_backup, "back up paths (or those in config.toml) into a new snapshot")
    sp.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to back up")
    sp.add_argument("--exclude", action="append", metavar="PATTERN",
                    help="skip paths matching PATTERN (gitignore syntax, relative to each PATH); repeatable")
    sp.add_argument("-v", "--verbose", action="store_true", help="also list skipped special files")
    sp.add_argument("--k", type=int, default=0, metavar="K",
                    help="mesh: shares needed to rebuild a pack (default: [mesh] k, or ceil(n/2))")
    sp.add_argument("--n", type=int, default=0, metavar="N",
                    help="mesh: shares per pack, each on a different peer "
                         "(default: [mesh] n, or min(4, trusted peers online))")

    add("snapshots", cmd_snapshots, "list the snapshots")

    sp = add("ls", cmd_ls, "list the contents of a snapshot")
    sp.add_argument("snapshot", metavar="SNAP", help="snapshot id prefix, 'latest' or 'latest~N'")
    sp.add_argument("path", nargs="?", metavar="PATH", help="only below this path (as backed up)")
    sp.add_argument("-r", "--recursive", action="store_true", help="list PATH recursively")

    sp = add("restore", cmd_restore, "restore a snapshot (or chosen paths) below a target directory")
    sp.add_argument("snapshot", metavar="SNAP", help="snapshot id prefix, 'latest' or 'latest~N'")
    sp.add_argument("--target", required=True, metavar="DIR",
                    help="where to restore; each path comes back below DIR under its full original path")
    sp.add_argument("--path", action="append", metavar="P", help="restore only P (as backed up); repeatable")
    sp.add_argument("--dry-run", action="store_true", help="show what would be restored, write nothing")

    sp = add("mount", cmd_mount, "browse the snapshots as a read-only file system (FUSE) until Ctrl-C",
             json_flag=False)
    sp.formatter_class = argparse.RawDescriptionHelpFormatter
    sp.epilog = """\
layout:
  DIR/snapshots/<short id>/<original path>   every snapshot of this node, as backed up
  DIR/latest                                 a symlink to the newest snapshot's folder

Reading a file fetches and decrypts only the chunks it needs: from the local store, or
through the running daemon from the holders. Works while the daemon runs (no home lock).

examples:
  mkdir -p /mnt/backups && corestate mount /mnt/backups
  ls /mnt/backups/latest/home/me              (in another terminal)
  cp /mnt/backups/snapshots/3f2a91c0/home/me/notes.txt .
  diff -r /mnt/backups/latest/home/me/src ~/src
  fusermount3 -u /mnt/backups                 (or Ctrl-C in the first terminal)

Needs FUSE 3 (Debian: apt install fuse3 libfuse3-dev pkg-config) and pyfuse3
(pip install 'corestate[mount]')."""
    sp.add_argument("dir", metavar="DIR", help="an empty folder to mount on")
    sp.add_argument("--debug", action="store_true", help="log every FUSE request (to stderr)")

    sp = add("diff", cmd_diff, "show what changed between two snapshots")
    sp.add_argument("a", metavar="SNAP1")
    sp.add_argument("b", metavar="SNAP2")

    sp = add("check", cmd_check, "verify the store; exits non-zero on any damage")
    sp.add_argument("--read-data", action="store_true", help="read, decrypt and hash every byte")
    sp.add_argument("--rebuild-index", action="store_true",
                    help="first rebuild the local index from the pack headers (after index damage)")

    sp = add("forget", cmd_forget, "forget snapshots, by name or by a keep-policy (--prune: free their space)")
    sp.add_argument("snapshots", nargs="*", metavar="SNAP", help="snapshots to forget (ids, prefixes, latest~N)")
    sp.add_argument("--keep-last", type=int, default=0, metavar="N", help="keep the N newest snapshots")
    for unit, period in (("hourly", "hours"), ("daily", "days"), ("weekly", "weeks"), ("monthly", "months"),
                         ("yearly", "years")):
        sp.add_argument(f"--keep-{unit}", type=int, default=0, metavar="N",
                        help=f"keep the newest snapshot of each of the N newest {period} that have one")
    sp.add_argument("--keep-within", metavar="DURATION", help="keep every snapshot this close to the newest (e.g. 2d)")
    sp.add_argument("--prune", action="store_true", help="then delete every pack no remaining snapshot needs")
    sp.add_argument("--dry-run", action="store_true", help="show what would go; change nothing")

    sp = add("prune", cmd_prune, "delete the packs no snapshot needs (left by forget or by an interrupted backup)")
    sp.add_argument("--dry-run", action="store_true", help="show what would go; change nothing")

    sp = add("repair", cmd_repair, "rebuild the shares of packs below full redundancy onto new holders")
    sp.add_argument("--dry-run", action="store_true", help="survey the holders and show the plan; change nothing")

    add("stats", cmd_stats, "sizes and counts of the store")

    nodep = sub.add_parser("node", help="run this node as a daemon, or ask the running one",
                           description="the node daemon: serves shares to peers, runs scheduled "
                                       "backups, and runs the commands of this CLI while it is up")
    nsub = nodep.add_subparsers(dest="node_command", metavar="COMMAND")
    np_ = nsub.add_parser("run", help="run the daemon in the foreground (logs to stderr; stop with Ctrl-C or SIGTERM)")
    np_.set_defaults(fn=cmd_node_run)
    np_.add_argument("--listen", action="append", metavar="MULTIADDR",
                     help="listen here, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable; default: [mesh] listen, "
                          "else an ephemeral port on all interfaces)")
    np_.add_argument("--passphrase-file", metavar="F", help="read the passphrase from the first line of F")
    _hsm_option(np_)
    np_.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    np_.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ni = nsub.add_parser("info", help="the running daemon's PeerID and listen addresses (fails if none runs)")
    ni.set_defaults(fn=cmd_node_info)
    ni.add_argument("--json", action="store_true", help="machine-readable output")
    ne = nsub.add_parser("events", help="follow the running daemon's events until Ctrl-C (one JSON "
                                        "object per line with --json)",
                         description="follow the running daemon's events: backup, restore, check and "
                                     "repair progress, peers up and down, group changes, alerts, "
                                     "the next scheduled runs")
    ne.set_defaults(fn=cmd_node_events)
    ne.add_argument("--topic", action="append", metavar="T",
                    help="only these kinds (repeatable): backup, restore, check, repair, retention, "
                         "peer, group, alert, schedule")
    ne.add_argument("--json", action="store_true", help="one JSON object per line, with a \"kind\"")

    peerp = sub.add_parser("peer", help="the peers this node trusts with its shares")
    psub = peerp.add_subparsers(dest="peer_command", metavar="COMMAND")
    pa = psub.add_parser("add", help="trust a peer: its address ends in /p2p/<peer id> (`corestate node info` there)")
    pa.set_defaults(fn=cmd_peer_add)
    pa.add_argument("addr", metavar="MULTIADDR")
    pa.add_argument("--domain", metavar="SITE/HOST",
                    help="failure-domain labels: shares of a pack spread over distinct sites, then hosts")
    pl = psub.add_parser("list", help="known peers: trusted ones and those seen on the LAN")
    pl.set_defaults(fn=cmd_peer_list)
    pr = psub.add_parser("remove", help="stop trusting a peer")
    pr.set_defaults(fn=cmd_peer_remove)
    pr.add_argument("peer", metavar="PEER", help="its PeerID (or the end of it, as `peer list` shows)")
    for spx in (pa, pl, pr):
        spx.add_argument("--passphrase-file", metavar="F", help="read the passphrase from the first line of F")
        _hsm_option(spx)
        spx.add_argument("--json", action="store_true", help="machine-readable output")

    groupp = sub.add_parser("group", help="a peer group: members with admins, a shared signed catalog",
                            description="groups: an admin creates one, invites machines, removes a stolen "
                                        "laptop; members hold each other's shares and replicate the catalog")
    gsub = groupp.add_subparsers(dest="group_command", metavar="COMMAND")
    g = gsub.add_parser("create", help="create a group; this node becomes its first admin")
    g.set_defaults(fn=cmd_group_create)
    g.add_argument("name")
    gi = gsub.add_parser("invite", help="a one-time invite token (printed alone on the last line)")
    gi.set_defaults(fn=cmd_group_invite)
    gi.add_argument("--admin", action="store_true", help="the new member is an admin")
    gi.add_argument("--expires", default="24h", metavar="DURATION", help="e.g. 30m, 24h, 7d (default 24h)")
    gj = gsub.add_parser("join", help="join with a token from `group invite` (redeemed at the issuing admin)")
    gj.set_defaults(fn=cmd_group_join)
    gj.add_argument("token")
    gm = gsub.add_parser("members", help="members, roles, removed identities")
    gm.set_defaults(fn=cmd_group_members)
    gr = gsub.add_parser("remove", help="remove a member for good (admins only); its streams are refused")
    gr.set_defaults(fn=cmd_group_remove)
    gr.add_argument("peer", metavar="PEER")
    gl = gsub.add_parser("leave", help="leave the group")
    gl.set_defaults(fn=cmd_group_leave)
    gs = gsub.add_parser("sync", help="sync the catalog with every member now")
    gs.set_defaults(fn=cmd_group_sync)
    for spx in (g, gi, gj, gm, gr, gl, gs):
        spx.add_argument("--passphrase-file", metavar="F", help="read the passphrase from the first line of F")
        _hsm_option(spx)
        spx.add_argument("--json", action="store_true", help="machine-readable output")

    add("status", cmd_status, "this node at a glance: peers, last and next backup, redundancy, alerts")

    sp = add("tui", cmd_tui, "the terminal UI: the node and its group at a glance, browse and restore",
             key=False, json_flag=False)
    sp.epilog = ("keys: 1-6 switch screens, ? shows every key, ctrl+p the command palette, q quits.\n"
                 "examples:\n  corestate tui                  the daemon of the default home\n"
                 "  corestate --home /srv/cs tui   the daemon of another home\n"
                 "It needs a running daemon (`corestate node run`); started without one it waits for it.")
    sp.formatter_class = argparse.RawDescriptionHelpFormatter
    anomp = sub.add_parser(
        "anomaly", help="the anomaly model's verdicts: ransomware-like change, silent corruption",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Each backup is judged against this node's usual changes: ok, suspect (recorded), or "
                    "alert (the last snapshot before it is protected from forget and prune, retention "
                    "pauses for those paths, an `anomaly` alert goes out). The model never deletes or "
                    "blocks your files.",
        epilog="examples:\n"
               "  corestate anomaly list                 the suspect and alerting backups\n"
               "  corestate anomaly explain latest       the numbers behind the verdict, the files most responsible\n"
               "  corestate anomaly ack 3f2a1b9c         it was me (a big re-encode, an archive): learn it, "
               "lift the protection\n")
    asub = anomp.add_subparsers(dest="anomaly_command", metavar="COMMAND")
    al = asub.add_parser("list", help="backups judged suspect or alert (--all: every judged backup)")
    al.set_defaults(fn=cmd_anomaly_list)
    al.add_argument("--all", action="store_true", help="the ok backups too")
    ae = asub.add_parser("explain", help="why a backup was judged as it was: reasons, numbers, files")
    ae.set_defaults(fn=cmd_anomaly_explain)
    ae.add_argument("snapshot", metavar="SNAP", help="a snapshot id, prefix, latest or latest~N")
    aa = asub.add_parser("ack", help="an expected change: teach the model, lift the protection "
                                     "(asks on a terminal; --yes otherwise)")
    aa.set_defaults(fn=cmd_anomaly_ack)
    aa.add_argument("snapshot", metavar="SNAP", help="the snapshot the verdict is about")
    aa.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for spx in (al, ae, aa):
        spx.add_argument("--passphrase-file", metavar="F", help="read the passphrase from the first line of F")
        _hsm_option(spx)
        spx.add_argument("--json", action="store_true", help="machine-readable output")

    advp = sub.add_parser(
        "advise", help="advice from this node's history: backup times, when storage fills, cheaper codes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The optimizer reads this node's own history (each backup's volumes, the store's "
                    "growth, the age of its data) and shows the numbers behind each piece of advice.",
        epilog="examples:\n"
               "  corestate advise schedule              when files change; the backup times that leave the least waiting\n"
               "  corestate advise capacity --quota 500GiB   when the store reaches 500 GiB at its growth rate\n"
               "  corestate advise tiering               data untouched for 90 days and a cheaper code for it\n")
    vsub = advp.add_subparsers(dest="advise_command", metavar="TOPIC")
    for topic, text in (("schedule", "change volume by hour of week, and suggested backup times"),
                        ("capacity", "store growth, and when a quota or the disk fills"),
                        ("tiering", "cold data, and a cheaper erasure code for it")):
        vp = vsub.add_parser(topic, help=text)
        vp.set_defaults(fn=cmd_advise, topic=topic)
        if topic == "capacity":
            vp.add_argument("--quota", metavar="SIZE", help="forecast against this size (e.g. 500GiB) instead of the disk")
        vp.add_argument("--passphrase-file", metavar="F", help="read the passphrase from the first line of F")
        _hsm_option(vp)
        vp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = add("health", cmd_health, "how safe the data is over time: packs full, degraded, at risk or lost, "
             "per snapshot; each holder's state (ok, suspect, evicted, lost), audits and shares; what "
             "repair does and an ETA to full redundancy")
    sp.formatter_class = argparse.RawDescriptionHelpFormatter
    sp.epilog = """examples:
  corestate health             the summary; exit 0 when every pack is at full redundancy, else 3
  corestate health --json      {"packs": {"full": .., "degraded": .., "at_risk": .., "lost": ..},
                               "holders": [{"peer": .., "state": .., ...}], "repair": {...}, ...}

It asks nobody: it shows what the daemon's audits ([schedule] audit_every) and repairs
([schedule] repair_every) learned. A holder unreachable longer than [health]
holder_lost_after counts as lost; one that fails audits turns suspect, then evicted; the
shares of either are rebuilt on others."""
    sp = add("audit", cmd_audit, "audit the holders of this node's shares now: random blocks proved against "
             "the roots recorded at upload, a few shares read whole; updates each holder's standing")
    sp.formatter_class = argparse.RawDescriptionHelpFormatter
    sp.epilog = """examples:
  corestate audit              one round now; exit 0 when every check passed, else 3
  corestate audit --json       {"challenges": .., "passed": .., "failed": .., "changes": [...]}

The daemon runs the same round every [schedule] audit_every; `corestate health` shows
what the rounds found."""

    # -- targets --
    targetp = sub.add_parser(
        "target", help="S3-compatible buckets and NAS folders that hold shares like peers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="storage targets: a bucket (AWS, B2, Wasabi, MinIO, Garage, Ceph) or a local "
                    "or mounted folder holds shares like a trusted peer: placement, audits, repair, "
                    "health and prune treat it alike, in a failure domain of its own",
        epilog="""examples:
  export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
  corestate target add aws s3://my-backups/laptop                 an AWS bucket, a key prefix
  corestate target add b2 s3://my-bucket/corestate --endpoint https://s3.us-west-004.backblazeb2.com
  corestate target add minio s3://backups --endpoint http://minio.lan:9000 \\
      --credentials-file ~/.aws/credentials --profile minio --quota "500 GiB"
  corestate target add nas file:///mnt/nas/corestate                a mounted NAS share
  corestate target list                                           shares and bytes on each, checked now
  corestate target remove nas                                     refused while it holds shares

Shares are ciphertext: a target never sees a readable byte. S3 credentials come from
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) where the target is opened
- the daemon, when one runs - or from --credentials-file (AWS format), never stored here.""")
    tsub = targetp.add_subparsers(dest="target_command", metavar="COMMAND")
    ta = tsub.add_parser(
        "add", help="add a target after proving access (write, read back, delete a probe)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="add a storage target; nothing is saved when the check fails",
        epilog="""examples:
  corestate target add aws s3://my-backups/laptop
  corestate target add b2 s3://my-bucket/corestate --endpoint https://s3.us-west-004.backblazeb2.com
  corestate target add wasabi s3://bkp --endpoint https://s3.eu-central-1.wasabisys.com --quota "1 TiB"
  corestate target add minio s3://backups --endpoint http://minio.lan:9000 --credentials-file ~/minio.ini
  corestate target add nas file:///mnt/nas/corestate

The region is $AWS_REGION, else the one the endpoint's host names, else us-east-1.
A folder target must exist (a share that is not mounted is refused, never filled in its
place on the root disk).""")
    ta.set_defaults(fn=cmd_target_add)
    ta.add_argument("name", metavar="NAME", help="1-32 lowercase letters, digits and dashes; "
                    "its holder name is target:NAME")
    ta.add_argument("url", metavar="URL", help="s3://BUCKET[/PREFIX] or file:///ABSOLUTE/PATH")
    ta.add_argument("--endpoint", metavar="URL", help="an S3-compatible service's endpoint "
                    "(B2, Wasabi, MinIO, Garage, Ceph); default AWS")
    ta.add_argument("--quota", metavar="SIZE", help='the most this node keeps there, e.g. "500 GiB" '
                    "(default: no limit but the target's own)")
    ta.add_argument("--credentials-file", metavar="PATH", help="S3 keys from this AWS-format "
                    "credentials file instead of the environment")
    ta.add_argument("--profile", metavar="P", default="default",
                    help="the profile of --credentials-file (default: default)")
    ta.add_argument("--no-check", action="store_true",
                    help="save without proving access now (e.g. the NAS is offline today)")
    tl = tsub.add_parser("list", help="the targets: shares and bytes this node keeps on each, "
                         "reachable now or the error (exit 3 when one is not)")
    tl.set_defaults(fn=cmd_target_list)
    tl.add_argument("--no-check", action="store_true", help="do not contact the targets")
    tr = tsub.add_parser("remove", help="remove a target (refused while the ledger records shares "
                         "on it; --force: repair rebuilds them elsewhere)")
    tr.set_defaults(fn=cmd_target_remove)
    tr.add_argument("name", metavar="NAME")
    tr.add_argument("--force", action="store_true", help="remove it even though it holds shares: "
                    "they are unreachable from then on and the next repair rebuilds them on other holders")
    for spx in (ta, tl, tr):
        spx.add_argument("--passphrase-file", metavar="F", help="read the passphrase from the first line of F")
        _hsm_option(spx)
        spx.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("demo", cmd_demo, "a guided run: back up a sample tree, change it, restore and verify",
             key=False)
    sp.add_argument("--dir", type=Path, help="work in DIR instead of a temporary folder")
    sp.add_argument("--keep", action="store_true", help="keep the demo's files for you to explore")

    # -- sim --
    add_sim_parser(sub)
    return p


def _hsm_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--hsm-module", metavar="LIB",
                    help="for a key sealed by a PKCS#11 token: load this module library instead of "
                         "the one the key file names (which is loaded only when it belongs to you "
                         "or root — to root alone when you are root — and nobody else can write it)")
