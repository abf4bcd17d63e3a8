"""The dataset registry: every dataset known by name, in one place.

    from cam_joint.data import DATASETS, load_dataset_by_name

    cub = load_dataset_by_name("cub", data_dir="~/data/CUB_200_2011", protocol="etri2020")
    birds = load_dataset_by_name("synthetic", seed=1, distractors=8)
    DATASETS["cub"].title        # "CUB-200-2011 (Caltech-UCSD Birds) with ..." for model cards

A name that is not registered is a Hugging Face Hub dataset id (or a packaged builder such as "imagefolder"), handed
to `datasets.load_dataset` and renamed to the shared columns (`cam_joint.data.hub_datasets`).

Adding a dataset: write ``cam_joint/data/<name>.py`` with a loader returning a `datasets.DatasetDict` with the shared
columns (`SHARED_COLUMNS`), and add one `DatasetSpec` line to `_BUILTIN_DATASETS` below. Code outside the package
calls `register_dataset` instead. The loader is imported only when its dataset is loaded, so this module (and
``import cam_joint.data``) stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cam_joint.data.splits import PROTOCOLS

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one dataset, and what it provides.

    The loader is called as ``loader(data_dir, protocol=protocol, **kwargs)`` when ``needs_data_dir``, else as
    ``loader(**kwargs)``, plus ``protocol=protocol`` if the dataset has more than one protocol. A protocol it does
    not list, a missing ``data_dir`` or one given to a dataset that reads no folder is refused before the call.
    """

    name: str
    title: str  # one line, for model cards: "the dataset this model was trained on"
    loader: str  # "package.module:function", imported lazily
    needs_data_dir: bool = False  # read from the dataset's original folder (never downloaded)
    protocols: tuple[str, ...] = ("official",)  # split protocols; "official" = the dataset's own splits
    extra_columns: tuple[str, ...] = ()  # columns besides SHARED_COLUMNS that every split has
    aliases: tuple[str, ...] = ()  # other names it answers to (e.g. "cub200")

    def __post_init__(self) -> None:
        module_name, colon, function_name = self.loader.partition(":")
        if not (colon and module_name and function_name.isidentifier()):
            raise ValueError(f"dataset {self.name!r}: loader must be 'package.module:function', got {self.loader!r}")
        if "official" not in self.protocols:
            # load_dataset_by_name's default protocol; every dataset has splits of its own.
            raise ValueError(f"dataset {self.name!r}: protocols must include 'official', got {self.protocols!r}")

    def load_function(self) -> Callable[..., "datasets.DatasetDict"]:
        """Import and return the loader."""
        module_name, _, function_name = self.loader.partition(":")
        module = importlib.import_module(module_name)
        try:
            return getattr(module, function_name)
        except AttributeError:
            raise ImportError(f"dataset {self.name!r}: module {module_name} has no loader {function_name!r} "
                              f"(registered as {self.loader!r})") from None

    def load(self, data_dir: str | Path | None = None, protocol: str = "official",
             **kwargs: Any) -> "datasets.DatasetDict":
        """Check the arguments against this spec, then call the loader (see the class docstring)."""
        if protocol not in self.protocols:
            raise ValueError(f"{self.name}: protocol {protocol!r} does not apply; {self.name} has "
                             f"{', '.join(map(repr, self.protocols))}")
        if self.needs_data_dir:
            if data_dir is None:
                raise ValueError(f"{self.name}: data_dir is required (the dataset's original folder; nothing is "
                                 f"downloaded)")
            return self.load_function()(data_dir, protocol=protocol, **kwargs)
        if data_dir is not None:
            raise ValueError(f"{self.name}: takes no data_dir (it reads no folder), got data_dir={str(data_dir)!r}")
        if len(self.protocols) > 1:
            kwargs["protocol"] = protocol
        return self.load_function()(**kwargs)


# One line per dataset; the loader lives in its own module of this package.
_BUILTIN_DATASETS = (
    DatasetSpec("cub", "CUB-200-2011 (Caltech-UCSD Birds) with the captions of Reed et al. (2016)",
                "cam_joint.data.cub:load_cub", needs_data_dir=True, protocols=PROTOCOLS,
                extra_columns=("bbox", "parts"), aliases=("cub200",)),
    DatasetSpec("flowers", "Oxford Flowers 102 with the captions of Reed et al. (2016)",
                "cam_joint.data.flowers:load_flowers", needs_data_dir=True, protocols=PROTOCOLS,
                aliases=("flowers102",)),
    # With distractors=n > 0 the synthetic birds also have a "distractor_parts" column.
    DatasetSpec("synthetic", "the built-in synthetic birds (`cam_joint.data.synthetic`)",
                "cam_joint.data.synthetic:make_synthetic_dataset", extra_columns=("part_mask", "discriminative_parts")),
)

DATASETS: dict[str, DatasetSpec] = {}
_ALIASES: dict[str, str] = {}  # alias -> registered name


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to `DATASETS` (its aliases too); a name or alias already taken is refused unless ``replace``."""
    if not replace:
        for key in (spec.name, *spec.aliases):
            owner = key if key in DATASETS else _ALIASES.get(key)
            if owner is not None:
                raise ValueError(f"dataset name {key!r} is already registered (by {owner!r}); pass replace=True")
    old = DATASETS.pop(spec.name, None)
    for alias in old.aliases if old else ():
        _ALIASES.pop(alias, None)
    DATASETS[spec.name] = spec
    _ALIASES.update({alias: spec.name for alias in spec.aliases})
    return spec


for _spec in _BUILTIN_DATASETS:
    register_dataset(_spec)
del _spec


def find_dataset(name: str) -> DatasetSpec | None:
    """The spec registered under ``name`` or one of its aliases; None for any other name (a Hub dataset id)."""
    spec = DATASETS.get(name)
    if spec is None and name in _ALIASES:
        spec = DATASETS.get(_ALIASES[name])
    return spec


def registered_protocols() -> tuple[str, ...]:
    """Every protocol some registered dataset has, "official" first (choices for a ``--protocol`` option)."""
    protocols = {p: None for spec in DATASETS.values() for p in spec.protocols}
    return ("official", *(p for p in protocols if p != "official"))


def load_dataset_by_name(
    name: str, data_dir: str | Path | None = None, protocol: str = "official", **kwargs: Any
) -> "datasets.DatasetDict":
    """Load a registered dataset (or alias) through its loader, any other name from the Hugging Face Hub.

    ``kwargs`` go to the loader (e.g. `load_cub`'s ``skip_bad``, `make_synthetic_dataset`'s ``seed``), or for a Hub
    dataset to `datasets.load_dataset`, except ``column_mapping``, which `normalize_hub_columns` takes.
    """
    spec = find_dataset(name)
    if spec is not None:
        return spec.load(data_dir, protocol, **kwargs)
    from cam_joint.data.hub_datasets import load_hub_dataset

    if protocol != "official":
        having = [n for n, s in DATASETS.items() if protocol in s.protocols]
        where = f"defined for {' and '.join(having)} only" if having else "not defined for any registered dataset"
        raise ValueError(f"{name}: protocol {protocol!r} is {where}; use 'official' for a Hub dataset")
    return load_hub_dataset(name, data_dir, **kwargs)


__all__ = ["DATASETS", "DatasetSpec", "find_dataset", "load_dataset_by_name", "register_dataset",
           "registered_protocols"]
