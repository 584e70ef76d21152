"""Benchmark (issue 13): the certificate store's operations with real crypto, in ms.

What a CSMS request costs the charger (controller/security/certstore.py, store on disk with
fsync): a new key pair and CSR (SignCertificate; P-256 default, RSA 2048 for comparison),
CertificateSigned's validation and atomic install (leaf + sub-CA chain to a CPO root),
InstallCertificate of a root, GetInstalledCertificateIds over a full store (20 roots, hash
data SHA256) and client_identity() (what each connection attempt asks). Median, p99, max
over the rounds after a warm-up; figures only, exit code 0 unless the benchmark fails.

Usage (from the repository root)::

    .venv/bin/python bench/certificates.py              # 100 rounds (RSA: 10)
    .venv/bin/python bench/certificates.py --quick      # 20 rounds (RSA: 3)
    .venv/bin/python bench/certificates.py --dir /some/disk/dir
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import add_repo_root_to_sys_path, format_stats, quiet_logging, run_main

add_repo_root_to_sys_path()

from cryptography import x509  # noqa: E402

from controller.runtime.clock import ManualClock  # noqa: E402
from controller.security.certcheck import HashAlgorithm, KeyType  # noqa: E402
from controller.security.certstore import CertificateUse, CertStore  # noqa: E402
from tests.security.pki import issue, make_root, make_sub_ca, pem  # noqa: E402

STATION = "CP-BENCH"
CPO = "Bench CPO"


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Certificate store operation times (ms).")
    parser.add_argument("--quick", action="store_true", help="20 rounds (RSA: 3)")
    parser.add_argument("-n", type=int, default=None, help="rounds (default 100)")
    parser.add_argument("--dir", default=None, help="store directory (default: a temp dir)")
    args = parser.parse_args(argv)
    rounds = args.n or (20 if args.quick else 100)
    rsa_rounds = max(3, rounds // 10)
    quiet_logging()
    base = Path(tempfile.mkdtemp(prefix="evsed-bench-certs-", dir=args.dir))
    try:
        clock = ManualClock()
        store = CertStore(base, clock=clock)
        root = make_root(STATION + " root")
        sub = make_sub_ca(root)
        store.install_root(CertificateUse.CSMS_ROOT, root.pem, max_count=20)
        extra = [make_root(f"Root {i}") for i in range(19)]

        def signed_chain() -> str:
            csr = x509.load_pem_x509_csr(
                store.new_csr(organization=CPO, station_id=STATION).encode()
            )
            return pem(issue(csr.subject, csr.public_key(), sub)) + sub.pem  # type: ignore[arg-type]

        chains: list[str] = []

        def accept() -> None:
            assert store.accept_signed(
                chains.pop(), organization=CPO, station_id=STATION, max_chain_chars=10000
            )

        def accept_round() -> float:
            chains.append(signed_chain())  # not timed: the CA's work
            t0 = time.perf_counter()
            accept()
            return (time.perf_counter() - t0) * 1000.0

        install_times = []
        for cert in extra:
            t0 = time.perf_counter()
            store.install_root(CertificateUse.MANUFACTURER_ROOT, cert.pem, max_count=20)
            install_times.append((time.perf_counter() - t0) * 1000.0)
        assert store.root_count() == 20
        figures = [
            (
                "new_csr EC P-256 (key pair + CSR + 0600 key file)",
                timed(lambda: store.new_csr(organization=CPO, station_id=STATION), rounds),
            ),
            (
                "new_csr RSA 2048",
                timed(
                    lambda: store.new_csr(
                        organization=CPO, station_id=STATION, key_type=KeyType.RSA_2048
                    ),
                    rsa_rounds,
                ),
            ),
            ("CertificateSigned: validate + install", [accept_round() for _ in range(rounds)]),
            ("InstallCertificate of a root (19 installs)", install_times),
            (
                "GetInstalledCertificateIds, 19 roots, SHA256",
                timed(
                    lambda: store.installed_hashes(
                        CertificateUse.MANUFACTURER_ROOT, HashAlgorithm.SHA256
                    ),
                    rounds,
                ),
            ),
            ("client_identity()", timed(store.client_identity, rounds)),
            ("csms_roots_pem()", timed(store.csms_roots_pem, rounds)),
        ]
        print(
            f"certificate store on {base} ({platform.machine()}, Python "
            f"{platform.python_version()}), {rounds} rounds:"
        )
        for label, values in figures:
            print(f"  {label:<50} {format_stats(values, digits=2, unit='ms')}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run_main(main, "certificates")
