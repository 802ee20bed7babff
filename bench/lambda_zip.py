"""Zips a release binary as a Lambda deployment package: one entry named `bootstrap`, executable, deflated at the
highest level (what `cargo lambda build --output-format zip` and `sam build` produce for provided.al2023)."""

import sys
import zipfile


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: lambda_zip.py BINARY OUT.zip")
    binary, out = sys.argv[1], sys.argv[2]
    info = zipfile.ZipInfo("bootstrap", date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = 0o100755 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(binary, "rb") as f, zipfile.ZipFile(out, "w") as z:
        z.writestr(info, f.read(), compresslevel=9)


if __name__ == "__main__":
    main()
