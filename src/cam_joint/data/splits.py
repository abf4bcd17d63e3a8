"""Split protocols: `official` (each dataset's own split) and `etri2020` (Table 1 of the ETRI 2020 paper).

official
    CUB: ``train``/``test`` from ``train_test_split.txt`` (5,994 / 5,794 images, 200 classes).
    Flowers: ``train``/``validation``/``test`` from ``setid.mat`` trnid/valid/tstid (1,020 / 1,020 / 6,149 images,
    102 classes).

etri2020 (Table 1: images, classes in parentheses)
    =========  ==============  =============  =============  ============
    dataset    task            train          validation     test
    =========  ==============  =============  =============  ============
    Birds      classification  5,313 (150)    1,771 (150)    1,771 (150)
    Birds      captioning      5,894 (100)    2,961 (50)     2,933 (50)
    Flowers    classification  4,222 (82)     1,406 (82)     1,406 (82)
    Flowers    captioning      5,878 (62)     1,156 (20)     1,155 (20)
    =========  ==============  =============  =============  ============

    Classification splits are ``train``/``validation``/``test``; captioning splits are ``caption_train``/
    ``caption_validation``/``caption_test`` (class-disjoint). The classification classes are the captioning train +
    validation classes; the captioning test classes are never classified.

    Birds: the 150 classification classes and the 50 captioning test classes are the StackGAN/AttnGAN class split
    (`CUB_STACKGAN_TEST_CLASSES`): its totals, 8,855 and 2,933 images, are exactly Table 1's. The paper does not say
    which 100/50 of the 150 classes caption-train/validate, nor which Flowers classes go where (82 + 20 classes are
    the sizes of Reed et al.'s Flowers split, whose class lists are not available to us), so those class lists are
    chosen here by one rule, `select_classes_with_exact_total` with seed 0:

        Order the candidate classes by SHA-256 of ``"<seed>:<class key>"`` (a fixed pseudo-random order), then take
        the lexicographically first subset in that order with exactly the required number of classes and images:
        walk the order and keep a class whenever the classes after it can still complete the count exactly.

    Applied to the full datasets' class sizes, it gives `CUB_ETRI2020_CAPTION_VALIDATION_CLASSES` (50 of the 150,
    2,961 images; the other 100 hold 5,894), `FLOWERS_ETRI2020_CAPTION_TEST_CLASSES` (20 of 102, 1,155 images) and
    then, from the remaining 82, `FLOWERS_ETRI2020_CAPTION_VALIDATION_CLASSES` (20, 1,156 images; the other 62 hold
    5,878). The lists are hard-coded (the tests re-derive them from the real metadata), so loading never searches,
    and a partial copy of a dataset gets the same classes.

    Classification splits each class's images 60/20/20 (stratified, so every class is in all three splits):
    validation and test each get floor(N / 5) of the N images of the classification classes (CUB 8,855 -> 1,771;
    Flowers 7,034 -> 1,406) and train gets the rest (5,313; 4,222). Per class of n images, validation and test get
    n // 5 each, and the floor(N / 5) - sum(n // 5) images left over go one each to the classes with the largest
    remainder n % 5 (ties: class key order). Inside a class, images are ordered by SHA-256 of ``"<seed>:<image_id>"``:
    the first go to validation, the next to test, the rest to train. On a partial dataset the same rules apply to
    the images present (the counts are then smaller).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Collection, Iterable, Mapping, Sequence

from cam_joint.data.layout_errors import DatasetLayoutError

if TYPE_CHECKING:  # layout_files imports `datasets`; the dataset registry reads PROTOCOLS without paying for it
    from cam_joint.data.layout_files import ImageRecord

PROTOCOLS = ("official", "etri2020")
CLASSIFICATION_SPLITS = ("train", "validation", "test")
CAPTIONING_SPLITS = ("caption_train", "caption_validation", "caption_test")
ETRI2020_SEED = 0

# StackGAN / AttnGAN birds test classes (their `test/` split; `trainclasses` are the other 150 of CUB's 200).
CUB_STACKGAN_TEST_CLASSES: tuple[str, ...] = (
    "001.Black_footed_Albatross", "004.Groove_billed_Ani", "006.Least_Auklet", "008.Rhinoceros_Auklet",
    "009.Brewer_Blackbird", "014.Indigo_Bunting", "023.Brandt_Cormorant", "029.American_Crow",
    "031.Black_billed_Cuckoo", "033.Yellow_billed_Cuckoo", "034.Gray_crowned_Rosy_Finch", "035.Purple_Finch",
    "036.Northern_Flicker", "037.Acadian_Flycatcher", "038.Great_Crested_Flycatcher", "043.Yellow_bellied_Flycatcher",
    "049.Boat_tailed_Grackle", "051.Horned_Grebe", "053.Western_Grebe", "066.Western_Gull", "072.Pomarine_Jaeger",
    "079.Belted_Kingfisher", "083.White_breasted_Kingfisher", "084.Red_legged_Kittiwake", "086.Pacific_Loon",
    "091.Mockingbird", "095.Baltimore_Oriole", "096.Hooded_Oriole", "098.Scott_Oriole", "101.White_Pelican",
    "102.Western_Wood_Pewee", "103.Sayornis", "112.Great_Grey_Shrike", "114.Black_throated_Sparrow",
    "119.Field_Sparrow", "121.Grasshopper_Sparrow", "130.Tree_Sparrow", "135.Bank_Swallow", "138.Tree_Swallow",
    "147.Least_Tern", "156.White_eyed_Vireo", "163.Cape_May_Warbler", "165.Chestnut_sided_Warbler",
    "166.Golden_winged_Warbler", "180.Wilson_Warbler", "183.Northern_Waterthrush", "185.Bohemian_Waxwing",
    "186.Cedar_Waxwing", "187.American_Three_toed_Woodpecker", "197.Marsh_Wren",
)  # fmt: skip

# select_classes_with_exact_total(sizes of the 150 non-StackGAN-test classes, 50 classes, 2,961 images, seed 0)
CUB_ETRI2020_CAPTION_VALIDATION_CLASSES: tuple[str, ...] = (
    "002.Laysan_Albatross", "007.Parakeet_Auklet", "010.Red_winged_Blackbird", "011.Rusty_Blackbird",
    "013.Bobolink", "015.Lazuli_Bunting", "016.Painted_Bunting", "018.Spotted_Catbird", "020.Yellow_breasted_Chat",
    "026.Bronzed_Cowbird", "027.Shiny_Cowbird", "030.Fish_Crow", "039.Least_Flycatcher", "045.Northern_Fulmar",
    "050.Eared_Grebe", "054.Blue_Grosbeak", "060.Glaucous_winged_Gull", "068.Ruby_throated_Hummingbird",
    "071.Long_tailed_Jaeger", "080.Green_Kingfisher", "082.Ringed_Kingfisher", "085.Horned_Lark",
    "088.Western_Meadowlark", "089.Hooded_Merganser", "092.Nighthawk", "093.Clark_Nutcracker", "100.Brown_Pelican",
    "104.American_Pipit", "111.Loggerhead_Shrike", "115.Brewer_Sparrow", "118.House_Sparrow",
    "126.Nelson_Sharp_tailed_Sparrow", "132.White_crowned_Sparrow", "137.Cliff_Swallow", "140.Summer_Tanager",
    "145.Elegant_Tern", "148.Green_tailed_Towhee", "153.Philadelphia_Vireo", "157.Yellow_throated_Vireo",
    "161.Blue_winged_Warbler", "167.Hooded_Warbler", "168.Kentucky_Warbler", "175.Pine_Warbler",
    "178.Swainson_Warbler", "181.Worm_eating_Warbler", "193.Bewick_Wren", "194.Cactus_Wren", "195.Carolina_Wren",
    "199.Winter_Wren", "200.Common_Yellowthroat",
)  # fmt: skip

# select_classes_with_exact_total(sizes of all 102 classes, 20 classes, 1,155 images, seed 0)
FLOWERS_ETRI2020_CAPTION_TEST_CLASSES: tuple[str, ...] = (
    "class_00001", "class_00003", "class_00007", "class_00009", "class_00016", "class_00018", "class_00021",
    "class_00025", "class_00026", "class_00027", "class_00034", "class_00039", "class_00045", "class_00055",
    "class_00062", "class_00067", "class_00079", "class_00081", "class_00093", "class_00094",
)  # fmt: skip

# select_classes_with_exact_total(sizes of the 82 classes left, 20 classes, 1,156 images, seed 0)
FLOWERS_ETRI2020_CAPTION_VALIDATION_CLASSES: tuple[str, ...] = (
    "class_00006", "class_00010", "class_00013", "class_00014", "class_00015", "class_00019", "class_00024",
    "class_00029", "class_00031", "class_00032", "class_00033", "class_00035", "class_00049", "class_00053",
    "class_00058", "class_00061", "class_00064", "class_00069", "class_00080", "class_00102",
)  # fmt: skip


# ------------------------------------------------------------------------------------------------ deterministic rules
def seeded_order(keys: Iterable[str], seed: int = ETRI2020_SEED) -> list[str]:
    """A fixed pseudo-random order: by SHA-256 of "<seed>:<key>" (stable across Python versions and machines)."""
    return sorted(keys, key=lambda key: (hashlib.sha256(f"{seed}:{key}".encode()).hexdigest(), key))


def select_classes_with_exact_total(
    class_sizes: Mapping[str, int], n_classes: int, n_images: int, seed: int = ETRI2020_SEED
) -> list[str]:
    """The lexicographically first ``n_classes`` classes, in `seeded_order`, holding exactly ``n_images`` images.

    Raises ValueError if no such subset exists.
    """
    order = seeded_order(class_sizes, seed)
    sizes = [class_sizes[key] for key in order]
    # reachable[i][k]: bit t set <=> some k classes among order[i:] hold exactly t images (Python ints as bitsets).
    reachable = [[0] * (n_classes + 1) for _ in range(len(order) + 1)]
    reachable[len(order)][0] = 1
    for i in range(len(order) - 1, -1, -1):
        for k in range(n_classes + 1):
            skip = reachable[i + 1][k]
            take = reachable[i + 1][k - 1] << sizes[i] if k else 0
            reachable[i][k] = skip | take
    if not reachable[0][n_classes] >> n_images & 1:
        raise ValueError(f"no {n_classes} of these {len(order)} classes hold exactly {n_images} images")
    chosen: list[str] = []
    need_classes, need_images = n_classes, n_images
    for i, key in enumerate(order):
        if need_classes == 0:
            break
        rest = need_images - sizes[i]
        if rest >= 0 and reachable[i + 1][need_classes - 1] >> rest & 1:
            chosen.append(key)
            need_classes, need_images = need_classes - 1, rest
    return sorted(chosen)


def stratified_60_20_20(
    class_of: Sequence[str], image_ids: Sequence[str], seed: int = ETRI2020_SEED
) -> dict[str, list[int]]:
    """Positions of the items in ``train``/``validation``/``test``: 60/20/20 per class, exact totals (module doc)."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for position, key in enumerate(class_of):
        by_class[key].append(position)
    total = len(class_of)
    held_out = {key: len(members) // 5 for key, members in by_class.items()}  # per split: validation and test
    leftover = total // 5 - sum(held_out.values())
    # One more validation AND one more test image for the classes with the largest remainders. A class can only
    # take both if it keeps >= 0 training images (matters only for tiny partial copies: full classes have >= 40).
    eligible = [key for key in by_class if 3 * held_out[key] + len(by_class[key]) % 5 >= 2 and len(by_class[key]) % 5]
    eligible.sort(key=lambda key: (-(len(by_class[key]) % 5), key))
    for key in eligible[:leftover]:
        held_out[key] += 1

    splits: dict[str, list[int]] = {name: [] for name in CLASSIFICATION_SPLITS}
    for key, members in by_class.items():
        ranked = sorted(members, key=lambda p: hashlib.sha256(f"{seed}:{image_ids[p]}".encode()).hexdigest())
        n = held_out[key]
        splits["validation"] += ranked[:n]
        splits["test"] += ranked[n : 2 * n]
        splits["train"] += ranked[2 * n :]
    return {name: sorted(positions) for name, positions in splits.items()}


# ------------------------------------------------------------------------------------------------------- protocols
def official_split_indices(records: Sequence[ImageRecord], split_names: Sequence[str]) -> dict[str, list[int]]:
    """Record positions per split of the dataset's own split (each record carries its ``official_split``)."""
    splits: dict[str, list[int]] = {name: [] for name in split_names}
    for position, record in enumerate(records):
        splits[str(record.official_split)].append(position)
    return splits


def etri2020_split_indices(
    records: Sequence[ImageRecord],
    *,
    all_class_keys: Collection[str],
    caption_test_classes: Collection[str],
    caption_validation_classes: Collection[str],
    classes_file: Path,
) -> dict[str, list[int]]:
    """Record positions per split of the etri2020 protocol, given the captioning class lists.

    Every class named by the protocol must exist in the dataset (``classes_file`` is named in the error if not).
    """
    known = set(all_class_keys)
    test_classes, validation_classes = set(caption_test_classes), set(caption_validation_classes)
    for key in sorted(test_classes | validation_classes):
        if key not in known:
            raise DatasetLayoutError(classes_file, f"no class {key!r}, which the etri2020 protocol assigns to a split")
    classify = [p for p, r in enumerate(records) if r.class_key not in test_classes]
    positions = stratified_60_20_20([records[p].class_key for p in classify], [records[p].image_id for p in classify])
    splits = {name: [classify[i] for i in indices] for name, indices in positions.items()}

    def in_classes(classes: set[str]) -> list[int]:
        return [p for p, r in enumerate(records) if r.class_key in classes]

    held_out_classes = test_classes | validation_classes
    splits["caption_train"] = [p for p, r in enumerate(records) if r.class_key not in held_out_classes]
    splits["caption_validation"] = in_classes(validation_classes)
    splits["caption_test"] = in_classes(test_classes)
    return splits
