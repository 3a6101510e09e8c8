"""Every system of umm, one file per family; importing this package registers them all."""

from umm.models import mmar, monoformer, transfusion  # noqa: F401
from umm.models import imagebind, unibind  # noqa: F401
import umm.tokenizers.image  # noqa: F401,E402  (image tokenizers: vq, rq, fsq, lfq, vqvideo, vae)
from umm.models import chameleon  # noqa: F401,E402
from umm.models import emu3, lwm  # noqa: F401,E402
from umm.models import showo  # noqa: F401,E402
from umm.models import vila_u  # noqa: F401,E402
from umm.models import lavit  # noqa: F401,E402
from umm.models import cond_decoder, nextgpt, seedx, textbind  # noqa: F401,E402
from umm.models.factory import create_model, from_pretrained, save_pretrained
from umm.models.system import load_system, save_system

__all__ = ["create_model", "from_pretrained", "load_system", "save_pretrained", "save_system"]
