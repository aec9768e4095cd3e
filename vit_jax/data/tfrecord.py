"""TFDS datasets prepared as tfrecord (TFDS's default, what big_vision users have), converted to
the array_record our loader reads, without TensorFlow.

    python -m vit_jax.data.tfrecord NAME --data_dir=SRC --out_data_dir=DST

A tfrecord file is a sequence of records framed as ``length (uint64 LE) | masked CRC-32C of the
length | bytes | masked CRC-32C of the bytes``; each record is one serialized ``tf.train.Example``.
TFDS's array_record files hold exactly those serialized examples, so the conversion copies
records shard for shard (same split names, shard lengths, features, class names: the dataset's
``dataset_info.json``, ``features.json`` and label files are copied, with the file format set to
array_record). Reading needs no TensorFlow: the framing is checked record by record (the length's
CRC always; the bytes' CRC when ``google-crc32c`` or ``crc32c`` is installed, a pure-Python CRC
of 150 GB being days of work).

Resumable: each shard is written to a temporary name and renamed when complete, so a rerun skips
the shards already there; ``dataset_info.json`` is written last, so a half-converted folder is
never taken for a prepared dataset. Progress (shards, records/s, ETA) goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from vit_jax.data.errors import DataError

INFO = "dataset_info.json"
_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), in Python: for the 8-byte lengths and small files."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _fast_crc32c() -> Callable[[bytes], int] | None:
    """A C implementation of CRC-32C, when one is installed."""
    try:
        import google_crc32c

        return lambda data: int(google_crc32c.value(data))
    except ImportError:
        pass
    try:
        import crc32c as crc32c_module

        return crc32c_module.crc32c
    except ImportError:
        return None


def masked_crc(data: bytes, crc: Callable[[bytes], int] = crc32c) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits, add a constant (mod 2^32)."""
    value = crc(data)
    return (((value >> 15) | (value << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_tfrecord(path: str | os.PathLike,
                  data_crc: Callable[[bytes], int] | None = None) -> Iterator[bytes]:
    """The records of one tfrecord file; a damaged frame is a DataError naming the file and the
    record. ``data_crc``: also check each record's bytes with this CRC-32C."""
    with open(path, "rb") as f:
        index = 0
        while header := f.read(12):
            if len(header) < 12:
                raise DataError(f"{path}: record {index} is cut short (a truncated file?)")
            length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
            if masked_crc(length_bytes) != length_crc:
                raise DataError(f"{path}: record {index} has a damaged length (CRC mismatch)")
            (length,) = struct.unpack("<Q", length_bytes)
            payload, footer = f.read(length), f.read(4)
            if len(payload) < length or len(footer) < 4:
                raise DataError(f"{path}: record {index} is cut short (a truncated file?)")
            if data_crc is not None and masked_crc(payload, data_crc) != \
                    struct.unpack("<I", footer)[0]:
                raise DataError(f"{path}: record {index} is damaged (CRC mismatch)")
            yield payload
            index += 1


def write_tfrecord(path: str | os.PathLike, records: Iterable[bytes]) -> None:
    """Writes ``records`` framed as TensorFlow's TFRecordWriter does (tests and fixtures)."""
    with open(path, "wb") as f:
        for record in records:
            length = struct.pack("<Q", len(record))
            f.write(length + struct.pack("<I", masked_crc(length)) + record +
                    struct.pack("<I", masked_crc(record)))


# ----------------------------------------------------------------------------- conversion


def find_prepared(data_dir: str | os.PathLike, name: str) -> Path:
    """``data_dir/name[/config]/<version>``: the newest preparation of ``name``."""
    base = Path(data_dir).expanduser() / name
    found = sorted(base.glob(f"*/{INFO}")) + sorted(base.glob(f"*/*/{INFO}"))
    if not found:
        raise DataError(f"no prepared TFDS dataset {name!r} under {Path(data_dir).expanduser()} "
                        f"(looked for {name}/[CONFIG/]VERSION/{INFO})")
    return max(found, key=lambda p: _version_key(p.parent.name)).parent


def _version_key(version: str) -> tuple:
    return tuple(int(x) if x.isdigit() else -1 for x in version.split("."))


def convert(source: Path, destination: Path, *, log: Callable[[str], None] = print,
            verify_data: bool = True) -> dict[str, int]:
    """Converts the tfrecord preparation in ``source`` (a version folder) into ``destination``;
    returns the records per split. Shards already converted are kept."""
    info = json.loads((source / INFO).read_text())
    file_format = info.get("fileFormat", "tfrecord")
    if file_format != "tfrecord":
        raise DataError(f"{source} is prepared as {file_format}, not tfrecord: read it directly "
                        "(data.data_dir)")
    data_crc = _fast_crc32c() if verify_data else None
    if verify_data and data_crc is None:
        log("note: no google-crc32c or crc32c module: checking record framing, not the bytes' "
            "CRCs (pip install google-crc32c to check them too)")
    destination.mkdir(parents=True, exist_ok=True)
    shards = [(split["name"], path, int(length))
              for split in info["splits"]
              for path, length in zip(_shard_paths(source, info["name"], split["name"]),
                                      split.get("shardLengths", []), strict=True)]
    total = sum(length for _, _, length in shards)
    done = converted = 0
    t0 = time.time()
    for i, (split, path, length) in enumerate(shards, 1):
        target = destination / path.name.replace(".tfrecord-", ".array_record-")
        if not target.exists():
            count = _convert_shard(path, target, data_crc)
            if count != length:
                raise DataError(f"{path}: {count} records, but {INFO} says {length}")
            converted += length
        done += length
        rate = converted / max(time.time() - t0, 1e-9)
        eta = (total - done) / rate if converted else 0.0
        log(f"shard {i}/{len(shards)} ({split}): {done:,}/{total:,} records"
            + (f", {rate:,.0f} records/s, ETA {_hms(eta)}" if converted else " (already there)"))
    for extra in source.iterdir():  # features.json, label files, ... (dataset_info.json last)
        if extra.is_file() and ".tfrecord-" not in extra.name and extra.name != INFO:
            shutil.copy2(extra, destination / extra.name)
    info["fileFormat"] = "array_record"
    tmp = destination / (INFO + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, destination / INFO)
    return {split["name"]: sum(int(n) for n in split.get("shardLengths", []))
            for split in info["splits"]}


def _shard_paths(source: Path, name: str, split: str) -> list[Path]:
    paths = sorted(source.glob(f"{name}-{split}.tfrecord-*-of-*"))
    if not paths:
        raise DataError(f"no tfrecord shards {name}-{split}.tfrecord-*-of-* in {source}")
    return paths


def _convert_shard(path: Path, target: Path, data_crc) -> int:
    from array_record.python.array_record_module import ArrayRecordWriter

    partial = target.with_name(target.name + ".incomplete")
    writer = ArrayRecordWriter(os.fspath(partial), "group_size:1")  # TFDS's own options
    count = 0
    try:
        for record in read_tfrecord(path, data_crc):
            writer.write(record)
            count += 1
    finally:
        writer.close()
    os.replace(partial, target)
    return count


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vit_jax.data.tfrecord",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="the TFDS dataset, e.g. imagenet2012 (or imagenet2012/CONFIG)")
    p.add_argument("--data_dir", required=True, help="where it is prepared as tfrecord")
    p.add_argument("--out_data_dir", required=True,
                   help="the data_dir to write the array_record copy to (not data_dir)")
    args = p.parse_args(argv)
    try:
        source = find_prepared(args.data_dir, args.name)
        destination = Path(args.out_data_dir).expanduser().absolute() / source.relative_to(
            Path(args.data_dir).expanduser())
        if destination.resolve() == source.resolve():
            raise DataError("--out_data_dir must differ from --data_dir (the tfrecord files "
                            "stay as they are)")
        counts = convert(source, destination)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.name}: {', '.join(f'{k} {v:,}' for k, v in counts.items())} examples as "
          f"array_record in {destination}; use --config.data.data_dir={args.out_data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
