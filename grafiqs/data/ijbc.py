"""IJB-C 1:1 template verification, the protocol of insightface's eval_ijbc.py that CR-FIQA (and so GraFIQs) use.

The protocol lives in two text files of IJB-C's `meta/` folder:

* `ijbc_face_tid_mid.txt`: `image_name template_id media_id` per image (469,375 lines);
* `ijbc_template_pair_label.txt`: `template_a template_b label` per comparison, label 1 =
  genuine, 0 = impostor (15,658,489 lines).

A comparison is between templates, not images. A template's embedding is the mean of its
images' embeddings within each media (photo or video), summed over its media and
L2-normalised; its quality is that of its worst image, and a pair's that of its worse
template. The images are the loose crops of `loose_crop/`, to be aligned with the five
landmarks of `ijbc_name_5pts_score.txt` (`score.py --landmarks`, grafiqs.faces.align).

The files are read in bulk: one read, then per 16 MB chunk a byte-level count of the
fields on every line and one numpy conversion per column; lines are looked at one by one
only to name a bad one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from grafiqs.errors import InputError, ReadError
from grafiqs.io.reading import read_bytes
from grafiqs.evaluation.edc import Orientation, pair_quality, to_higher_is_better

FACES_FILE = "{target}_face_tid_mid.txt"
PAIRS_FILE = "{target}_template_pair_label.txt"
FACES_COLUMNS = ("image_name", "template_id", "media_id")
PAIRS_COLUMNS = ("template_a", "template_b", "label")
CHUNK_BYTES = 1 << 24
MAX_REPORTED_MISSING = 5

_WHITE_SPACE = np.zeros(256, dtype=bool)
_WHITE_SPACE[list(b" \t\n\r\x0b\x0c")] = True  # what bytes.split() splits on


class IJBCDataError(InputError):
    """An IJB-C protocol file is malformed, or the protocol refers to templates or images that are missing."""


# --------------------------------------------------------------------------- readers


def _line_chunks(data: bytes):
    """(number of the first line, piece) of `data` in pieces of about CHUNK_BYTES that end at a line end."""
    start, line = 0, 1
    while start < len(data):
        end = data.find(b"\n", start + CHUNK_BYTES)
        end = len(data) if end < 0 else end + 1
        chunk = data[start:end]
        yield line, chunk
        line += chunk.count(b"\n")
        start = end


def _fields_per_line(chunk: bytes) -> np.ndarray:
    """How many white-space separated fields each line of `chunk` has (index 0 = its first line)."""
    codes = np.frombuffer(chunk, dtype=np.uint8)
    space = _WHITE_SPACE[codes]
    field_starts = np.flatnonzero(~space & np.concatenate(([True], space[:-1])))
    line_ends = np.flatnonzero(codes == ord("\n"))
    return np.bincount(np.searchsorted(line_ends, field_starts), minlength=len(line_ends) + 1)


def _first_unconvertible(chunk: bytes, first_line: int, columns: tuple[str, ...], has_name: bool) -> str:
    """The slow path: name the first line of `chunk` whose name is not UTF-8 or whose numbers are not integers."""
    for offset, line in enumerate(chunk.split(b"\n")):
        fields = line.split()
        if not fields:
            continue
        try:
            if has_name:
                fields[0].decode("utf-8")
            for column, text in list(zip(columns, fields))[int(has_name):]:
                int(text)
        except UnicodeDecodeError:
            return f"line {first_line + offset}: {columns[0]} is not UTF-8 text"
        except (ValueError, OverflowError):
            return f"line {first_line + offset}: {column} {text.decode('utf-8', 'replace')[:40]!r} is not an integer"
    raise AssertionError("numpy refused a chunk whose every field converts")  # pragma: no cover


def _read_table(path: str | os.PathLike, columns: tuple[str, ...], has_name: bool) -> tuple[list[str], np.ndarray]:
    """(first column as str if `has_name`, else []; the integer columns as int64 [rows, k]) of a text table."""
    layout = " ".join(columns)
    try:
        data = read_bytes(path, "IJB-C protocol file")
    except ReadError as error:
        raise IJBCDataError(f"{path}: not found; expected an IJB-C protocol file of lines `{layout}`"
                            if error.reason == "not found" else f"{path}: cannot be read ({error.reason})") from None
    width = len(columns)
    names: list[str] = []
    blocks: list[np.ndarray] = []
    for first_line, chunk in _line_chunks(data):
        counts = _fields_per_line(chunk)
        bad = np.flatnonzero((counts != 0) & (counts != width))
        if bad.size:
            raise IJBCDataError(f"{path}: line {first_line + bad[0]} has {counts[bad[0]]} fields, expected `{layout}`")
        tokens = chunk.split()
        try:
            if has_name:
                names += [token.decode("utf-8") for token in tokens[0::width]]
            numbers = [np.array(tokens[column::width], dtype=np.int64) for column in range(int(has_name), width)]
        except (ValueError, OverflowError):
            raise IJBCDataError(f"{path}: {_first_unconvertible(chunk, first_line, columns, has_name)}") from None
        blocks.append(np.stack(numbers, axis=1))
    if not blocks or not sum(len(block) for block in blocks):
        raise IJBCDataError(f"{path}: holds no lines; expected lines `{layout}`")
    return names, np.concatenate(blocks)


def _row_line(path: str | os.PathLike, row: int) -> int:
    """Line number of the `row`-th (0-based) non-blank line; only for error messages."""
    with open(path, "rb") as handle:
        nonblank = (number for number, line in enumerate(handle, start=1) if line.strip())
        return next(number for index, number in enumerate(nonblank) if index == row)


def read_face_tid_mid(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """`ijbc_face_tid_mid.txt` -> (image names, template id per image, media id per image)."""
    names, numbers = _read_table(path, FACES_COLUMNS, has_name=True)
    return names, numbers[:, 0], numbers[:, 1]


def read_template_pair_label(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """`ijbc_template_pair_label.txt` -> (template ids [P, 2], genuine flag [P])."""
    _, numbers = _read_table(path, PAIRS_COLUMNS, has_name=False)
    labels = numbers[:, 2]
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise IJBCDataError(f"{path}: line {_row_line(path, bad[0])}: label {labels[bad[0]]} is neither 1 (genuine) "
                            "nor 0 (impostor)")
    return numbers[:, :2].copy(), labels == 1


# --------------------------------------------------------------------------- the protocol


@dataclass(eq=False)
class IJBCProtocol:
    """Images with their template and media, and the template pairs to compare.

    `templates` are the sorted unique template ids: row t of `template_embeddings` and
    `template_quality` is template `templates[t]`; `pair_rows` are the pairs as such rows.
    """

    names: list[str] = field(repr=False)
    template_ids: np.ndarray = field(repr=False)
    media_ids: np.ndarray = field(repr=False)
    pairs: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    source: str = "IJB-C protocol"
    templates: np.ndarray = field(init=False, repr=False)
    pair_rows: np.ndarray = field(init=False, repr=False)
    _image_template: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.template_ids = np.asarray(self.template_ids, dtype=np.int64).reshape(-1)
        self.media_ids = np.asarray(self.media_ids, dtype=np.int64).reshape(-1)
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        self.labels = np.asarray(self.labels, dtype=bool).reshape(-1)
        if not len(self.names) == len(self.template_ids) == len(self.media_ids) or not self.names:
            raise IJBCDataError(f"{self.source}: {len(self.names)} images, {len(self.template_ids)} template ids and "
                                f"{len(self.media_ids)} media ids; expected one of each per image, at least one image")
        if len(self.pairs) != len(self.labels):
            raise IJBCDataError(f"{self.source}: {len(self.pairs)} template pairs but {len(self.labels)} labels")
        self.templates, self._image_template = np.unique(self.template_ids, return_inverse=True)
        rows = np.searchsorted(self.templates, self.pairs)
        unknown = self.templates[np.minimum(rows, len(self.templates) - 1)] != self.pairs
        if unknown.any():
            pair, side = np.argwhere(unknown)[0]
            raise IJBCDataError(
                f"{self.source}: template pair {pair + 1} (non-blank line {pair + 1} of the pair file) names template "
                f"{self.pairs[pair, side]}, which no image belongs to ({int(unknown.any(axis=1).sum())} such pairs); "
                "the face and pair files are not of one protocol"
            )
        self.pair_rows = rows

    @property
    def num_images(self) -> int:
        return len(self.names)

    def _per_image(self, values, what: str, ndim: int) -> np.ndarray:
        if values.ndim != ndim or len(values) != self.num_images:
            raise IJBCDataError(f"{what} must have one row per protocol image ({self.num_images}), got shape {values.shape}")
        return values

    def template_embeddings(self, embeddings) -> tuple[np.ndarray, np.ndarray]:
        """(template ids [T], L2-normalised template embeddings float32 [T, D]) from image embeddings [N, D].

        Per template: the mean embedding of its images in each media, summed over its media.
        Images are used as given: normalise them first for insightface's N0 mode. torch's
        index_add_ does the grouped sums (numpy's add.at / reduceat over [N, 512] rows are
        ~10x slower).
        """
        e = self._per_image(np.ascontiguousarray(embeddings, dtype=np.float32), "image embeddings", 2)
        media_rank = np.unique(self.media_ids, return_inverse=True)[1]
        num_media = media_rank.max() + 1
        # a media can appear in several templates: group by (template, media), not by media
        keys, group = np.unique(self._image_template * num_media + media_rank, return_inverse=True)
        group_template = torch.from_numpy(keys // num_media)
        group = torch.from_numpy(group)
        media_sum = torch.zeros(len(keys), e.shape[1]).index_add_(0, group, torch.from_numpy(e))
        media_mean = media_sum / torch.bincount(group, minlength=len(keys)).unsqueeze(1)
        template_sum = torch.zeros(len(self.templates), e.shape[1]).index_add_(0, group_template, media_mean)
        template_sum /= template_sum.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self.templates, template_sum.numpy()

    def template_quality(self, image_quality, orientation: Orientation = "higher_is_better") -> np.ndarray:
        """Each template's "higher is better" quality [T]: that of its worst image.

        The orientation is applied per image first, so for GraFIQs magnitudes (larger is worse)
        the worst image is the one with the largest magnitude.
        """
        q = self._per_image(to_higher_is_better(image_quality, orientation), "image qualities", 1)
        worst = np.full(len(self.templates), np.inf)
        np.minimum.at(worst, self._image_template, q)
        return worst

    def pair_similarity(self, template_embeddings, block_templates: int = 1024) -> np.ndarray:
        """Cosine similarity float32 [P] of each template pair, rows as `template_embeddings` returns them.

        Computed as row blocks of the template-by-template similarity matrix (one matrix
        product per block of `block_templates` first templates) from which the block's pairs
        are picked: memory stays at one [block, T] block, and a matrix product is several times
        faster than gathering two [P, D] embedding arrays.
        """
        f = np.asarray(template_embeddings, dtype=np.float32)
        if f.ndim != 2 or len(f) != len(self.templates):
            raise IJBCDataError(f"template embeddings must be [{len(self.templates)}, D] (one row per template), "
                                f"got shape {f.shape}")
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        first, second = self.pair_rows[:, 0], self.pair_rows[:, 1]
        similarity = np.empty(len(first), dtype=np.float32)
        for start in range(0, len(f), block_templates):
            chosen = np.flatnonzero((first >= start) & (first < start + block_templates))
            if chosen.size:
                block = f[start:start + block_templates] @ f.T
                similarity[chosen] = block[first[chosen] - start, second[chosen]]
        return similarity

    def pair_quality(self, template_quality) -> np.ndarray:
        """Each pair's "higher is better" quality [P]: that of its worse template (from `template_quality`)."""
        q = np.asarray(template_quality, dtype=np.float64)
        return pair_quality(q[self.pair_rows[:, 0]], q[self.pair_rows[:, 1]])


class TemplatePairSet:
    """The protocol as the EDC evaluation sees a pair set (grafiqs.evaluation.report.PairSet): per-image
    embeddings and qualities in, one similarity, mated flag and quality per template pair out."""

    def __init__(self, protocol: IJBCProtocol):
        self.protocol = protocol
        self.mated = protocol.labels

    def similarity(self, embeddings) -> np.ndarray:
        return self.protocol.pair_similarity(self.protocol.template_embeddings(embeddings)[1])

    def quality(self, per_image, orientation: Orientation) -> np.ndarray:
        return self.protocol.pair_quality(self.protocol.template_quality(per_image, orientation))


def load_ijbc_protocol(meta_dir: str | os.PathLike, target: str = "IJBC") -> IJBCProtocol:
    """The protocol in `<meta_dir>/<target>_face_tid_mid.txt` and `<target>_template_pair_label.txt`
    (target "IJBC", or "IJBB" for IJB-B's files of the same layout)."""
    faces = Path(meta_dir) / FACES_FILE.format(target=target.lower())
    pairs_file = Path(meta_dir) / PAIRS_FILE.format(target=target.lower())
    names, template_ids, media_ids = read_face_tid_mid(faces)
    pairs, labels = read_template_pair_label(pairs_file)
    return IJBCProtocol(names, template_ids, media_ids, pairs, labels, source=f"{faces} + {pairs_file}")


def ijbc_images(protocol: IJBCProtocol, loose_crop_dir: str | os.PathLike) -> list[str]:
    """Paths of the protocol's images in protocol order; all must exist.

    Score them aligned, e.g. `score.py --landmarks ijbc_name_5pts_score.txt`: the landmark
    file names images as the protocol does (`1.jpg`, ...).
    """
    root = Path(loose_crop_dir)
    if not root.is_dir():
        raise IJBCDataError(f"{root}: IJB-C image folder not found; give IJB-C's loose_crop/ folder")
    paths = [os.path.join(str(root), name) for name in protocol.names]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise IJBCDataError(f"{root}: {len(missing)} of {len(paths)} protocol images are missing, e.g. "
                            f"{', '.join(missing[:MAX_REPORTED_MISSING])}")
    return paths


# --------------------------------------------------------------------------- synthetic protocol

TEMPLATES_PER_SUBJECT = 6  # IJB-C: 23,124 templates of 3,531 subjects
MEDIA_PER_SUBJECT = 12
GENUINE_SHARE = 1 / 200


def _write_rows(path: Path, line_format: str, rows: np.ndarray, rows_per_write: int = 1 << 20) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for start in range(0, len(rows), rows_per_write):
            block = rows[start:start + rows_per_write]
            handle.write(line_format * len(block) % tuple(block.ravel().tolist()))


def synthetic_ijbc(directory: str | os.PathLike, num_images: int, num_templates: int, num_pairs: int,
                   seed: int = 0) -> tuple[Path, Path]:
    """Write a random protocol of IJB-C's layout into `directory`; returns (face file, pair file).

    Templates belong to subjects (about TEMPLATES_PER_SUBJECT each) and have uneven sizes
    (at least one image); a template's images come from a few of its subject's media, so
    media hold several images and are shared between a subject's templates. About
    GENUINE_SHARE of the pairs compare two templates of one subject. Image i is `{i+1}.jpg`,
    template ids start at 1, as in IJB-C.
    """
    if num_templates < 2 * TEMPLATES_PER_SUBJECT or num_images < num_templates or num_pairs < 1:
        raise InputError(f"a synthetic IJB-C protocol needs >= {2 * TEMPLATES_PER_SUBJECT} templates, at least one "
                         f"image per template and a pair; got {num_images} images, {num_templates} templates, "
                         f"{num_pairs} pairs")
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(0.0, 1.0, num_templates)
    image_template = np.sort(np.concatenate(
        [np.arange(num_templates), rng.choice(num_templates, num_images - num_templates, p=sizes / sizes.sum())]))
    num_subjects = num_templates // TEMPLATES_PER_SUBJECT
    subject = rng.permutation(np.arange(num_templates) % num_subjects)  # every subject has >= 2 templates
    media_count = np.minimum(1 + rng.poisson(2.0, num_templates), MEDIA_PER_SUBJECT)
    media_offset = rng.integers(0, MEDIA_PER_SUBJECT, num_templates)
    local_media = (media_offset[image_template] + rng.integers(0, media_count[image_template])) % MEDIA_PER_SUBJECT
    media = subject[image_template] * MEDIA_PER_SUBJECT + local_media + 1

    num_genuine = max(1, round(num_pairs * GENUINE_SHARE))
    by_subject = np.argsort(subject, kind="stable")
    subject_start = np.searchsorted(subject[by_subject], np.arange(num_subjects))
    subject_size = np.bincount(subject, minlength=num_subjects)
    position = np.empty(num_templates, dtype=np.int64)
    position[by_subject] = np.arange(num_templates) - subject_start[subject[by_subject]]
    a = rng.integers(0, num_templates, num_genuine)
    step = 1 + rng.integers(0, subject_size[subject[a]] - 1)  # to another template of a's subject
    genuine_b = by_subject[subject_start[subject[a]] + (position[a] + step) % subject_size[subject[a]]]
    impostor = rng.integers(0, num_templates, (num_pairs - num_genuine, 2))
    same = np.flatnonzero(subject[impostor[:, 0]] == subject[impostor[:, 1]])
    while same.size:  # redraw the second template of accidental same-subject pairs
        impostor[same, 1] = rng.integers(0, num_templates, same.size)
        same = same[subject[impostor[same, 0]] == subject[impostor[same, 1]]]
    pairs = np.concatenate([np.stack([a, genuine_b], axis=1), impostor])
    labels = np.concatenate([np.ones(num_genuine, np.int64), np.zeros(len(impostor), np.int64)])
    order = rng.permutation(num_pairs)

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    faces, pair_file = folder / FACES_FILE.format(target="ijbc"), folder / PAIRS_FILE.format(target="ijbc")
    _write_rows(faces, "%d.jpg %d %d\n", np.stack([np.arange(1, num_images + 1), image_template + 1, media], axis=1))
    _write_rows(pair_file, "%d %d %d\n", np.column_stack([pairs[order] + 1, labels[order]]))
    return faces, pair_file
