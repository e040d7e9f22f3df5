"""The trainer plugins: ``cakfx train texture|grain`` rebuild each model from a folder of samples.

Registration is light: each recipe is a ``TrainerSpec`` naming its class, imported when a run
starts. Layout: ``options`` (what a run takes), ``data`` (finding files, the feature cache,
pairing), ``base`` (the recipe interface), ``networks``, ``resume`` (the checkpoint ``--resume``
reads), ``history``, ``loop`` (a run end to end), ``optim``, and the recipes ``texture`` and
``grain``. ``cakfx.train(...)`` is the Python API; the CLI builds its commands from ``Options``.
"""

from cakfx.hookspecs import hookimpl
from cakfx.trainers.options import TrainerSpec

HELP = """Train a {kind} model on the audio files under SAMPLES.

Writes NAME.safetensors (to the user weights folder, or --out) and a ready
preset NAME.toml, so `cakfx process IN -p NAME -o OUT` works at once.
Checkpoints and history go to $CAKFX_HOME/training/NAME/.
"""

TEXTURE = TrainerSpec(
    "texture",
    "cak.texture",
    "cakfx.trainers.texture:TextureTrainer",
    summary="the CAK texture processor (AuGAN recipe)",
    help=HELP.format(kind="CAK texture"),
)
GRAIN = TrainerSpec(
    "grain",
    "cak.grain",
    "cakfx.trainers.grain:GrainTrainer",
    summary="the CAK grain processor (three CAK layers, grain-auditor GAN)",
    help=HELP.format(kind="CAK grain"),
)


@hookimpl
def register_trainers(register) -> None:
    register(TEXTURE)
    register(GRAIN)
