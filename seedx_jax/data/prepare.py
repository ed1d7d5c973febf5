"""`python -m seedx_jax.data.prepare --format llava_jsonl|edit_jsonl|webdataset --paths GLOBS --out DIR`:
raw data -> ArrayRecord shards with the images embedded (read by `format = "array_record"`).

Each record's images are read and decoded once here; missing or undecodable images and malformed
lines are counted, logged with their location and left out. `--out` follows `seedx_jax.outputs`:
shards are written into a partial sibling that becomes `--out` only when every shard is complete; an
existing `--out` is replaced only when it holds earlier shards of ours and `--overwrite` is given, and
never when it holds an input. Ctrl-C removes the partial shards.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time

from seedx_jax.data.formats import FORMATS, RawRecord, encode_record, open_source
from seedx_jax.exits import ArgumentParser, describe, error_line, exit_code, interrupts_as_exceptions
from seedx_jax.outputs import atomic_output, check_target, write_marker
from seedx_jax.progress import Progress
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


KIND = "array_record_shards"


def prepare(fmt: str, paths: list[str], out: str, *, image_dir: str = "", records_per_shard: int = 10000,
            stream=sys.stderr, overwrite: bool = False) -> dict:
    """Write the shards; returns {"records", "skipped", "shards"} (also saved as `<out>/prepare.json`)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    if fmt == "array_record":
        raise ValueError("--format array_record is already prepared")
    reader = open_source(fmt, paths, image_dir)
    total, written, skipped, shard_paths = len(reader), 0, [], []
    start = time.perf_counter()
    progress = Progress(stream)
    with atomic_output(out, KIND, inputs=_inputs(paths, image_dir), overwrite=overwrite) as tmp, \
            progress.stage(f"preparing {total} records"):
        writer = None
        for i in range(total):
            try:
                record = _with_image_bytes(reader[i])
            except ValueError as err:
                location = reader[i].location
                skipped.append(f"{location}: {err}")
                progress.note(f"skipped {location}: {err}")
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
                progress.step(done, total, f"records ({rate:.0f}/s, {len(skipped)} skipped)")
        if writer is not None:
            writer.close()
        summary = {"format": fmt, "records": written, "skipped": len(skipped), "skipped_items": skipped,
                   "shards": [os.path.basename(p) for p in shard_paths]}
        with open(os.path.join(tmp, "prepare.json"), "w") as f:
            json.dump(summary, f, indent=1)
        write_marker(tmp, KIND, format_read=fmt)
    return summary


def _inputs(paths: list[str], image_dir: str) -> list[str]:
    return list(paths) + ([image_dir] if image_dir else [])


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m seedx_jax.data.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--format", required=True, choices=[f for f in FORMATS if f not in ("array_record", "tfds")])
    parser.add_argument("--paths", required=True, help="comma-separated globs of jsonl files or tar shards")
    parser.add_argument("--image-dir", default="", help="jsonl formats: image paths are relative to this")
    parser.add_argument("--out", required=True, help="output directory (new or empty; earlier shards of ours "
                        "with --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier shards written to --out")
    parser.add_argument("--records-per-shard", type=int, default=10000)
    args = parser.parse_args(argv)
    paths = sorted(p for g in args.paths.split(",") if g.strip() for p in glob.glob(os.path.expanduser(g.strip())))
    try:
        with interrupts_as_exceptions():
            if not paths:
                raise ValueError(f"--paths {args.paths!r} matches no files")
            if args.records_per_shard < 1:
                raise ValueError(f"--records-per-shard {args.records_per_shard} must be at least 1")
            check_target(args.out, KIND, inputs=_inputs(paths, args.image_dir), overwrite=args.overwrite)
            summary = prepare(args.format, paths, args.out, image_dir=args.image_dir,
                              records_per_shard=args.records_per_shard, overwrite=args.overwrite)
    except (ValueError, OSError) as err:
        print(f"seedx_jax.data.prepare: error: {error_line(err)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, BaseException) as err:
        if isinstance(err, (SystemExit, Exception)):
            raise
        print(f"\nseedx_jax.data.prepare: {describe(err)}; nothing was written to {args.out}", file=sys.stderr)
        return exit_code(err)
    print(f"wrote {summary['records']} records in {len(summary['shards'])} shards to {args.out} "
          f"({summary['skipped']} skipped)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
