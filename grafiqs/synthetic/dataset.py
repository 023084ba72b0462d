"""The synthetic faces as a torch Dataset, generated on the fly (image, local identity label)."""
from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from grafiqs.synthetic.identities import (
    IdentityParams,
    check_world,
    sample_identity,
    sample_nuisance,
)
from grafiqs.synthetic.renderer import draw_face
from grafiqs.synthetic.seeds import _check_key


class SyntheticFaces(Dataset):
    """`num_identities * images_per_identity` synthetic faces, generated on the fly.

    Item i is sample `i % images_per_identity` of identity `identity_offset + i // images_per_identity`
    and comes back as (image, label): image is the uint8 112x112x3 BGR array, or `transform(image)`;
    label is the local identity index `i // images_per_identity` (0-based, for a classifier head).
    Disjoint `identity_offset` ranges give disjoint people (e.g. training vs held-out);
    `world` picks the nuisance distribution (identities.WORLDS).
    """

    def __init__(
        self,
        num_identities: int,
        images_per_identity: int,
        seed: int = 0,
        identity_offset: int = 0,
        transform: Callable | None = None,
        world: str = "standard",
    ):
        if num_identities < 1 or images_per_identity < 1:
            raise ValueError("num_identities and images_per_identity must be >= 1")
        _check_key(seed=seed, identity_offset=identity_offset)
        check_world(world)  # here, not at the first item
        self.world = world
        self.num_identities = int(num_identities)
        self.images_per_identity = int(images_per_identity)
        self.seed = int(seed)
        self.identity_offset = int(identity_offset)
        self.transform = transform
        self._identity_cache: dict[int, IdentityParams] = {}

    def __len__(self) -> int:
        return self.num_identities * self.images_per_identity

    def identity_of(self, index: int) -> int:
        """Global identity index of item `index`."""
        return self.identity_offset + index // self.images_per_identity

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        label, sample = divmod(int(index), self.images_per_identity)
        identity = self.identity_offset + label
        params = self._identity_cache.get(identity)
        if params is None:
            if len(self._identity_cache) > 4096:
                self._identity_cache.clear()
            params = self._identity_cache[identity] = sample_identity(self.seed, identity)
        image = draw_face(params, sample_nuisance(self.seed, identity, sample, self.world))
        return (self.transform(image) if self.transform is not None else image), label
