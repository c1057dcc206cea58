"""Storage targets: object stores and folders that hold shares like a peer does.

``store`` is the interface every backend implements (blocking calls, run from worker
threads) and its errors; ``folder`` is a local or mounted folder (``file:///mnt/nas/x``).
"""
