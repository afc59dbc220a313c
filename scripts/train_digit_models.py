"""Train the small digit-cards models that the book loads (chapters 11–13).

Run from the repository root (about 3 minutes on two CPU cores)::

    python scripts/train_digit_models.py            # Base-OC (ISA), Base-OC (SA), no context
    python scripts/train_digit_models.py --contexts base_oc_isa

The command line of :mod:`ocnet_edu.experiments.digit_models`. The models are written into the
package, ``ocnet_edu/zoo/checkpoints/digits_<context>.pt``, and loaded with
:func:`ocnet_edu.zoo.digits.load_digit_model`.
"""

from ocnet_edu.experiments.digit_models import main

if __name__ == "__main__":
    raise SystemExit(main())
