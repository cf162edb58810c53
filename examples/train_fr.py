"""Train an FR model on a data set under a defence, evaluate it, and write a JSON of metrics plus the model.

    python examples/train_fr.py --data att_faces --image-size 64 --defence none        # pixel-domain baseline
    python examples/train_fr.py --data att_faces --image-size 64 --defence mask        # frequency masking only
    python examples/train_fr.py --data lfw --image-size 64 --defence fixed --k 3
    python examples/train_fr.py --data lfw --image-size 64 --defence random
    python examples/train_fr.py --defence policy --policy runs/ppo/ppo_agent.zip --policy-algo ppo
    python examples/train_fr.py --data lfw --image-size 64 --defence none --public-fraction 0.367  # attack target
    python examples/train_fr.py --data lfw --image-size 64 --defence dpsgd --noise-multiplier 1.0
    python examples/train_fr.py --data lfw --image-size 64 --defence nls --smoothing -0.05

With ``--public-fraction`` the identities are split first (identity-disjoint, seeded): the model trains on the
private identities only, and ``split.npz`` records both sides (``private_idx``, ``public_idx``, indices into the
data set), which is what ``examples/evaluate_privacy.py`` needs to attack the model.

The training, the defences and the metrics are :func:`privacy.defences.train_fr_model`'s (see
:mod:`privacy.defences`); this script is its command line. Metrics: closed-set identification top-1/top-5 on
held-out images of the training identities beside the chance levels, time per training epoch, and for LFW the
10-fold verification on the official pairs (all pairs, and apart those whose identities were not in training).
"""

from __future__ import annotations

from privacy.cli import train_fr

if __name__ == "__main__":
    train_fr(doc=__doc__)
