"""Load a RecBole dataset, split it once, and keep what the protocol needs from it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data import create_dataset, data_preparation

from recbole_llm.errors import RecBoleLLMError


@dataclass
class Split:
    """RecBole's loaders plus the user-item pairs needed for masking and negative sampling."""

    dataset: object
    train: object
    valid: object
    test: object
    seen: sp.csr_matrix  # every (user, item) pair of the whole dataset
    valid_pairs: tuple[np.ndarray, np.ndarray]
    test_pairs: tuple[np.ndarray, np.ndarray]

    @property
    def n_users(self) -> int:
        return self.dataset.user_num

    @property
    def n_items(self) -> int:
        return self.dataset.item_num

    def history(self, phase: str) -> sp.csr_matrix:
        """Items a user has seen before the evaluated interaction of `phase` ('valid' | 'test').

        Defined as all of the user's items minus those held out in this and later phases, so that
        it is the same for general and sequential datasets.
        """
        held = [self.test_pairs] if phase == "test" else [self.valid_pairs, self.test_pairs]
        users = np.concatenate([u for u, _ in held])
        items = np.concatenate([i for _, i in held])
        held_out = pair_matrix(users, items, self.seen.shape)
        return (self.seen - self.seen.multiply(held_out)).tocsr()


def pair_matrix(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """0/1 user x item matrix of the given pairs (duplicates collapse to one)."""
    m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=shape)
    m.data[:] = 1.0
    return m


def subset_loader(config, loader, keep: np.ndarray, shuffle: bool = False):
    """A copy of a RecBole loader over the rows of its dataset where `keep` is true."""
    if keep.all():
        return loader
    ds = loader._dataset
    subset = ds.copy(ds.inter_feat[torch.from_numpy(keep)])
    return type(loader)(config, subset, loader._sampler, shuffle=shuffle)


def _pairs(dataset) -> tuple[np.ndarray, np.ndarray]:
    inter = dataset.inter_feat
    return inter[dataset.uid_field].numpy(), inter[dataset.iid_field].numpy()


def check_dataset_files(config) -> None:
    """Fail early, in one line, when the atomic files of a dataset are not where RecBole looks."""
    data_path = config["data_path"]
    inter_file = os.path.join(data_path, f"{config['dataset']}.inter")
    if config["benchmark_filename"] is None and not os.path.isfile(inter_file):
        raise RecBoleLLMError(
            f"Dataset '{config['dataset']}' not found: expected RecBole atomic files such as "
            f"{inter_file}. Set --data_path to the folder that contains a '{config['dataset']}/' "
            "folder (ml-100k is built in and needs no data_path)."
        )


def load_split(config) -> Split:
    """Create the dataset and RecBole's train/valid/test loaders for `config`."""
    dataset = create_dataset(config)
    inter = dataset.inter_feat  # still a DataFrame of every interaction, before augmentation
    shape = (dataset.user_num, dataset.item_num)
    seen = pair_matrix(inter[dataset.uid_field].to_numpy(), inter[dataset.iid_field].to_numpy(), shape)
    train, valid, test = data_preparation(config, dataset)
    return Split(dataset, train, valid, test, seen, _pairs(valid._dataset), _pairs(test._dataset))
