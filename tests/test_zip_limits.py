"""open_zip and check_member: one judge of zips others made (Sensor Logger
exports, .keras models), from the directory, before a byte is unpacked."""

from __future__ import annotations

import zipfile

import pytest

from harstream.stream.files.zip_limits import ZipLimits, ZipRefused, check_member, open_zip

LIMITS = ZipLimits(members=10, directory_bytes=4096, member_bytes=1 << 20, max_ratio=100, ratio_from=1 << 16)


def test_a_zip_within_its_limits_opens_and_its_members_pass(tmp_path):
    path = tmp_path / "ok.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.csv", "time,x\n" + "".join(f"{i},{i * 0.37:.5f}\n" for i in range(2000)))
    with open_zip(path, LIMITS, "ok.zip") as archive:
        for info in archive.infolist():
            check_member(info, LIMITS, f"ok.zip: {info.filename}")


def test_too_many_files_are_refused_from_the_end_record_naming_the_zip_and_the_bounds(tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(50):
            z.writestr(f"{i}", b"")
    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x01\x02")  # the directory spoilt: were it read, zipfile would say so
    data[start : data.rindex(b"PK\x05\x06")] = b"\xff" * (data.rindex(b"PK\x05\x06") - start)
    path.write_bytes(bytes(data))
    with pytest.raises(ZipRefused) as refused:
        open_zip(path, LIMITS, "many.zip")
    assert str(refused.value) == (
        "many.zip: a zip of 50 files in a directory of 2,390 bytes; "  # 46 bytes and the name each
        "at most 10 files and 4,096 bytes of directory are read"
    )


def test_no_zip_is_refused_naming_it(tmp_path):
    path = tmp_path / "r.zip"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ZipRefused, match=r"^r.zip: not a zip file we can read"):
        open_zip(path, LIMITS, "r.zip")


def test_a_member_declaring_too_much_or_packed_too_tightly_is_refused_naming_it(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("big.csv", b"0" * (2 << 20))  # over the member bound
        z.writestr("dense.csv", b"0,0\n" * (1 << 17))  # 512 KiB in about 1 KiB
        z.writestr("small.txt", b" " * 1000)  # packs tightly, but too small to judge
    with open_zip(path, LIMITS, "bomb.zip") as archive:
        big, dense, small = archive.infolist()
        with pytest.raises(ZipRefused, match=r"^bomb.zip: big.csv unpacks to 2,097,152 bytes, over the 1,048,576 read"):
            check_member(big, LIMITS, "bomb.zip: big.csv")
        with pytest.raises(ZipRefused, match=r"^bomb.zip: dense.csv: 524,288 bytes packed into [\d,]+, over 100:1"):
            check_member(dense, LIMITS, "bomb.zip: dense.csv")
        check_member(small, LIMITS, "bomb.zip: small.txt")
