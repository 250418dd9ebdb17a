"""Dataset spec strings: `neu:PATH`, `mvtec:PATH`, `dagm:PATH`, `folder:PATH`, `synthetic[:N]`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from defectopt.errors import DefectoptError

KINDS = ("neu", "mvtec", "dagm", "folder", "synthetic")
DEFAULT_SYNTHETIC_N = 400


@dataclass(frozen=True)
class DatasetSpec:
    kind: str
    path: Path | None = None  # None for synthetic (generated under the store's data folder)
    n: int | None = None  # synthetic only: number of images

    def __str__(self) -> str:
        if self.kind == "synthetic":
            return f"synthetic:{self.n}"
        return f"{self.kind}:{self.path}"


def parse_spec(text: str) -> DatasetSpec:
    text = (text or "").strip()
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise DefectoptError(
            f"malformed dataset spec '{text}': expected one of neu:PATH, mvtec:PATH, dagm:PATH, folder:PATH, synthetic[:N]"
        )
    if kind == "synthetic":
        if not sep:
            return DatasetSpec("synthetic", None, DEFAULT_SYNTHETIC_N)
        try:
            n = int(rest)
        except ValueError:
            raise DefectoptError(f"malformed dataset spec '{text}': N in synthetic:N must be an integer") from None
        if not 40 <= n <= 100_000:
            raise DefectoptError(f"malformed dataset spec '{text}': synthetic:N needs 40 <= N <= 100000")
        return DatasetSpec("synthetic", None, n)
    if not rest:
        raise DefectoptError(f"malformed dataset spec '{text}': missing PATH after '{kind}:'")
    return DatasetSpec(kind, Path(rest).expanduser())
