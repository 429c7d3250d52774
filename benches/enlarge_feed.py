#!/usr/bin/env python3
"""Writes a GTFS zip N times the size of another: every trip copied N times under new ids.

    python3 benches/enlarge_feed.py IN.zip N OUT.zip

Copy 0 keeps the original trip ids; copy k (1..N-1) appends `~k` to each trip_id in
trips.txt, stop_times.txt and frequencies.txt. Routes, stops, calendars and every other
file are written once, unchanged, so the result is the same network with N times the trips
and stop_times: the shape of a national feed, made from a real one.

It streams: each large member is read again for each copy and rows are written as they
are read, so memory stays small whatever N is. Members are deflated at level 1 (fast to
write; inflating is about as fast whatever the level was).
"""

import csv
import io
import sys
import zipfile

COPIED = {"trips.txt", "stop_times.txt", "frequencies.txt"}


def rows(zin, name):
    """The member's header and a reader over its rows (BOM dropped, quotes understood)."""
    text = io.TextIOWrapper(zin.open(name), encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    return next(reader, None), reader


def copy_member(zin, zout, name, n):
    header, _ = rows(zin, name)
    if header is None:
        zout.writestr(name, b"")
        return 0
    trip = header.index("trip_id") if "trip_id" in header else None
    written = 0
    with zout.open(name, "w") as raw:
        out = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for k in range(n if trip is not None else 1):
            _, reader = rows(zin, name)
            for row in reader:
                if k and trip is not None and trip < len(row):
                    row[trip] = f"{row[trip]}~{k}"
                writer.writerow(row)
                written += 1
        out.flush()
        out.detach()
    return written


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    source, n, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if n < 1:
        sys.exit("N must be at least 1")
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(
        target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1
    ) as zout:
        for info in zin.infolist():
            if info.is_dir():
                continue
            base = info.filename.rsplit("/", 1)[-1]
            if base in COPIED:
                count = copy_member(zin, zout, info.filename, n)
                print(f"{info.filename}: {count} rows", file=sys.stderr)
            else:
                zout.writestr(info, zin.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)


if __name__ == "__main__":
    main()
