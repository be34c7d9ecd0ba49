"""common: what every layer of the project shares; it imports nothing else of the project.

    errors.py     DataError (a data file is wrong) and ConfigError (options are wrong)
    cli.py        what every command shares: `error: ...` + exit 2, defaults written once
    files.py      atomic writes (temporary name, fsync, rename), read_json / write_json, a full disk as one line
    progress.py   progress bars on a terminal, plain lines in logs
    parallel.py   the cores this process may use, default worker counts, an ordered parallel map
    timing.py     the one timing helper: warm-up, synchronize, timed steps, interleaved rounds, best of
    device.py     the default device (cuda when torch sees one)

No torch at import time (device.py imports it when asked), so the offline tools run without it.
"""
