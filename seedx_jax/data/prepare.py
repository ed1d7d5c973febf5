"""`python -m seedx_jax.data.prepare --format llava_jsonl|edit_jsonl|webdataset --paths GLOBS --out DIR`:
raw data -> ArrayRecord shards with the images embedded (read by `format = "array_record"`).

Each record's images are read and decoded once here; missing or undecodable images and malformed
lines are counted, logged with their location and left out. Shards are written into a temporary
sibling directory that is renamed to `--out` only when every shard is complete.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

from seedx_jax.checkpoint import atomic_dir
from seedx_jax.data.formats import FORMATS, RawRecord, encode_record, open_source
from seedx_jax.vision.image_io import ImageInputError, load_image


def _with_image_bytes(record: RawRecord) -> RawRecord:
    """Images read into bytes and checked to decode; ValueError naming the problem when not."""
    if "error" in record.fields:
        raise ValueError(record.fields["error"])
    images = {}
    for name, src in record.images.items():
        if isinstance(src, str):
            if not os.path.isfile(src):
                raise ValueError(f"{name} {src}: no such file")
            with open(src, "rb") as f:
                src = f.read()
        try:
            load_image(src)
        except ImageInputError as err:
            raise ValueError(f"{name}: {err}") from None
        images[name] = src
    return RawRecord(record.kind, record.location, record.fields, images)


def prepare(fmt: str, paths: list[str], out: str, *, image_dir: str = "", records_per_shard: int = 10000,
            stream=sys.stderr) -> dict:
    """Write the shards; returns {"records", "skipped", "shards"} (also saved as `<out>/prepare.json`)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    if fmt == "array_record":
        raise ValueError("--format array_record is already prepared")
    reader = open_source(fmt, paths, image_dir)
    total, written, skipped, shard_paths = len(reader), 0, [], []
    start = time.perf_counter()
    with atomic_dir(out) as tmp:
        writer = None
        for i in range(total):
            try:
                record = _with_image_bytes(reader[i])
            except ValueError as err:
                location = reader[i].location
                skipped.append(f"{location}: {err}")
                print(f"\nskipped {location}: {err}", file=stream)
                continue
            if writer is None or written % records_per_shard == 0:
                if writer is not None:
                    writer.close()
                shard_paths.append(os.path.join(tmp, f"data-{len(shard_paths):05d}.array_record"))
                writer = ArrayRecordWriter(shard_paths[-1], "group_size:1")
            writer.write(encode_record(record))
            written += 1
            done = i + 1
            if done == total or done % 100 == 0:
                rate = done / max(time.perf_counter() - start, 1e-9)
                bar = "=" * int(30 * done / total)
                stream.write(f"\r[{bar:<30}] {done}/{total} records  {rate:.0f}/s  skipped {len(skipped)}")
                stream.flush()
        if writer is not None:
            writer.close()
        summary = {"format": fmt, "records": written, "skipped": len(skipped), "skipped_items": skipped,
                   "shards": [os.path.basename(p) for p in shard_paths]}
        with open(os.path.join(tmp, "prepare.json"), "w") as f:
            json.dump(summary, f, indent=1)
    stream.write("\n")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seedx_jax.data.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--format", required=True, choices=[f for f in FORMATS if f != "array_record"])
    parser.add_argument("--paths", required=True, help="comma-separated globs of jsonl files or tar shards")
    parser.add_argument("--image-dir", default="", help="jsonl formats: image paths are relative to this")
    parser.add_argument("--out", required=True, help="output directory (must not exist)")
    parser.add_argument("--records-per-shard", type=int, default=10000)
    args = parser.parse_args(argv)
    paths = sorted(p for g in args.paths.split(",") if g.strip() for p in glob.glob(os.path.expanduser(g.strip())))
    try:
        if not paths:
            raise ValueError(f"--paths {args.paths!r} matches no files")
        if os.path.exists(args.out):
            raise ValueError(f"--out {args.out} already exists")
        summary = prepare(args.format, paths, args.out, image_dir=args.image_dir,
                          records_per_shard=args.records_per_shard)
    except (ValueError, FileNotFoundError) as err:
        print(f"seedx_jax.data.prepare: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary['records']} records in {len(summary['shards'])} shards to {args.out} "
          f"({summary['skipped']} skipped)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
