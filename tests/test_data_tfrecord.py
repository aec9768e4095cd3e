"""TFDS datasets prepared as tfrecord: the framing read without TensorFlow, and the conversion to
array_record that keeps splits, features and class names (on a mock imagenet2012 laid out as
`tfds build` lays out tfrecord), resumable, with one-line errors."""

import json
import shutil
import struct

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from vit_jax import data
from vit_jax.data.mock_imagenet import write_mock_imagenet
from vit_jax.data.tfrecord import (
    DataError,
    crc32c,
    main,
    masked_crc,
    read_tfrecord,
    write_tfrecord,
)

PP = "decode|resize(16)|value_range(0,1)|onehot(1000)"


def test_crc32c_and_the_mask_match_their_definitions():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0
    value = crc32c(b"abc")
    assert masked_crc(b"abc") == (((value >> 15) | (value << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_records_round_trip_and_damage_is_named(tmp_path):
    records = [b"", b"x", bytes(range(256)) * 40]
    path = tmp_path / "a.tfrecord"
    write_tfrecord(path, records)
    assert list(read_tfrecord(path, crc32c)) == records
    raw = path.read_bytes()
    assert struct.unpack("<Q", raw[:8])[0] == 0  # the first frame: an empty record
    (tmp_path / "cut").write_bytes(raw[:-3])
    with pytest.raises(DataError, match=r"cut: record 2 is cut short"):
        list(read_tfrecord(tmp_path / "cut"))
    flipped = bytearray(raw)
    flipped[17 + 8] ^= 1  # record 1's length
    (tmp_path / "len").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=r"len: record 1 has a damaged length"):
        list(read_tfrecord(tmp_path / "len"))
    flipped = bytearray(raw)
    flipped[-10] ^= 1  # a byte of record 2
    (tmp_path / "data").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=r"data: record 2 is damaged \(CRC mismatch\)"):
        list(read_tfrecord(tmp_path / "data", crc32c))


def as_tfrecord_preparation(array_record_dir, out_dir):
    """The same dataset as `tfds build` writes it by default: tfrecord shards of the same
    serialized examples, the file format in dataset_info.json saying so."""
    out_dir.mkdir(parents=True)
    for path in array_record_dir.iterdir():
        if ".array_record-" in path.name:
            reader = ArrayRecordReader(str(path))
            write_tfrecord(out_dir / path.name.replace(".array_record-", ".tfrecord-"),
                           reader.read_all())
            reader.close()
        elif path.name == "dataset_info.json":
            info = json.loads(path.read_text())
            info["fileFormat"] = "tfrecord"
            (out_dir / path.name).write_text(json.dumps(info))
        else:
            shutil.copy(path, out_dir / path.name)


def test_a_tfrecord_imagenet_converts_to_the_same_dataset_and_resumes(tmp_path, capsys):
    original = write_mock_imagenet(tmp_path / "array_record", train=12, validation=6)
    version = tmp_path / "tfrecord" / "imagenet2012" / "5.1.0"
    as_tfrecord_preparation(tmp_path / "array_record" / "imagenet2012" / "5.1.0", version)
    config = dict(name="tfds:imagenet2012", data_dir=str(tmp_path / "tfrecord"),
                  eval_split="validation", pp_train=PP, pp_eval=PP)
    out = tmp_path / "converted"
    assert main(["imagenet2012", f"--data_dir={tmp_path / 'tfrecord'}",
                 f"--out_data_dir={out}"]) == 0
    log = capsys.readouterr().out
    assert "shard 2/2 (validation): 18/18 records" in log and "records/s" in log
    assert f"--config.data.data_dir={out}" in log
    converted = dict(config, data_dir=str(out))
    info, want = data.dataset_info(converted), data.dataset_info(dict(config, data_dir=str(
        tmp_path / "array_record")))
    assert (info.num_train, info.num_eval, info.class_names) == \
        (want.num_train, want.num_eval, want.class_names)
    assert info.class_names[0] == "n01440764" and len(info.class_names) == 1000
    got = next(data.build_eval_iterator(converted, batch_size=6))
    ref = next(data.build_eval_iterator(dict(converted, data_dir=str(tmp_path / "array_record")),
                                        batch_size=6))
    np.testing.assert_array_equal(got["image"], ref["image"])
    np.testing.assert_array_equal(got["label"], ref["label"])
    assert original.endswith("5.1.0")

    # interrupted after the first shard: the rerun converts only what is missing
    (out / "imagenet2012" / "5.1.0" / "dataset_info.json").unlink()
    (out / "imagenet2012" / "5.1.0" / "imagenet2012-validation.array_record-00000-of-00001"
     ).unlink()
    assert main(["imagenet2012", f"--data_dir={tmp_path / 'tfrecord'}",
                 f"--out_data_dir={out}"]) == 0
    log = capsys.readouterr().out
    assert "shard 1/2 (train): 12/18 records (already there)" in log
    assert "shard 2/2 (validation): 18/18 records, " in log
    assert data.dataset_info(converted).num_eval == 6


def test_conversion_errors_are_one_line(tmp_path, capsys):
    write_mock_imagenet(tmp_path / "ar", train=2, validation=1)
    assert main(["imagenet2012", f"--data_dir={tmp_path / 'ar'}",
                 f"--out_data_dir={tmp_path / 'x'}"]) == 2
    assert "is prepared as array_record, not tfrecord: read it directly" in \
        capsys.readouterr().err
    assert main(["imagenet2012", f"--data_dir={tmp_path / 'none'}",
                 f"--out_data_dir={tmp_path / 'x'}"]) == 2
    assert "no prepared TFDS dataset 'imagenet2012'" in capsys.readouterr().err
