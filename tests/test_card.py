"""fr_models.card: the model card a checkpoint carries, and checkpoints from before it."""

from __future__ import annotations

import pytest
import torch

from fr_models import FRConfig, FRTrainer
from fr_models.card import ModelCard


def test_card_round_trips_through_a_checkpoint_and_refuses_unknown_fields(tmp_path):
    trainer = FRTrainer(FRConfig(in_channels=54, input_size=(4, 4), num_classes=3, widths=(8, 16)))
    card = ModelCard(input="masked_dct", image_size=(32, 32), dropped_channels=(0, 1), class_names=("a", "b", "c"),
                     defence="policy", k_values=(2, 6), k_distribution={"2": 0.25, "6": 0.75})
    trainer.card = card
    trainer.save(tmp_path / "m.pt")
    assert FRTrainer.load(tmp_path / "m.pt").card == card
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour_space'\]; accepted: class_names"):
        ModelCard.from_dict({"colour_space": "rgb"})
    with pytest.raises(ValueError, match="input 'jpeg' is not one of 'pixel', 'masked_dct'"):
        ModelCard(input="jpeg")


def test_a_checkpoint_from_before_the_card_loads_its_metadata_as_a_card(tmp_path):
    trainer = FRTrainer(FRConfig(in_channels=54, input_size=(4, 4), num_classes=3, widths=(8, 16)))
    state = trainer.state_dict()
    del state["card"]
    state["metadata"] = {"input": "masked_dct", "dropped_channels": [0], "planes": 1, "upsample": 1, "colour": None,
                         "image_size": [32, 32], "class_names": ["a", "b", "c"], "defence": "fixed", "k": 3,
                         "k_values": [2, 3, 4, 5, 6]}
    torch.save(state, tmp_path / "old.pt")
    card = FRTrainer.load(tmp_path / "old.pt").card
    assert card.defence == "fixed" and card.k == 3 and card.image_size == (32, 32) and card.dropped_channels == (0,)
