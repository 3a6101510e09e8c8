"""Speech for ShapesWorld: captions spoken by espeak-ng, bundled with ``espeakng_loader``, via ctypes.

espeak-ng runs in synchronous mode (22050 Hz int16 delivered to a callback) and is resampled to 16 kHz.
The engine is a lazily created module singleton per *process*: ctypes handles cannot be pickled or
shared across fork, so DataLoader workers each create their own the first time they speak
(``_ENGINE`` remembers the pid it was made in). A lock serialises calls because espeak-ng keeps global
state and is not thread-safe; that state is also why each utterance gets a fresh library load.
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import random
import threading

import numpy as np

from umm.data.audio_io import TARGET_RATE, resample

# Accents and voice variants (espeak "+variant" suffix) that the sampler picks from.
VOICES: tuple[str, ...] = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us+f2",
    "en+m3",
    "en-us+f4",
)
RATE_RANGE = (130, 200)  # words per minute
PITCH_RANGE = (35, 65)  # espeak pitch 0..100

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_POS_CHARACTER, _CHARS_AUTO = 1, 0
_RAND_SEED = 1234


class _Engine:
    """espeak-ng for this process: its callback, a lock, and a fresh library load per utterance.

    espeak-ng keeps static state between utterances (e.g. its pitch-flutter phase), so the same text
    comes out a few samples different depending on what was said before, and it seeds the noise of
    breathy voices from the clock. Loading the library afresh for every utterance (dlopen, initialise,
    speak, terminate, dlclose: ~3 ms extra) and fixing the noise seed make ``world[i]["audio"]`` a
    deterministic function of i like every other key.
    """

    def __init__(self) -> None:
        import espeakng_loader

        self.path = espeakng_loader.get_library_path()
        self.data = espeakng_loader.get_data_path().encode()
        self.pid = os.getpid()
        self.rate = 0  # known after the first utterance (22050 Hz for espeak-ng)
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def on_audio(wav, n, _events):  # called by espeak from inside espeak_Synth
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = callback_type(on_audio)  # keep a reference: espeak holds a raw pointer
        self.lock = threading.Lock()

    def _load(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(self.path, mode=ctypes.RTLD_LOCAL)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data, 0)
        if rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise (returned {rate})")
        self.rate = int(rate)
        # espeak-ng seeds its noise generator (breathy voices) from the clock at initialisation
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed(_RAND_SEED)
        lib.espeak_SetSynthCallback(self._callback)
        return lib

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """int16 samples at ``self.rate`` of ``text`` spoken by ``voice``."""
        with self.lock:
            lib = self._load()
            try:
                if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise ValueError(f"espeak-ng has no voice {voice!r}")
                lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
                lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
                self._chunks.clear()
                data = text.encode() + b"\0"
                status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_AUTO, None, None)
                if status != 0:
                    raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
                lib.espeak_Synchronize()
            finally:
                lib.espeak_Terminate()
                _ctypes.dlclose(lib._handle)
            return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)


_ENGINE: _Engine | None = None


def engine() -> _Engine:
    """The process-wide espeak-ng engine, created on first use (and again after a fork)."""
    global _ENGINE
    if _ENGINE is None or _ENGINE.pid != os.getpid():
        _ENGINE = _Engine()
    return _ENGINE


def speak(text: str, voice: str = "en-us", rate: int = 165, pitch: int = 50) -> np.ndarray:
    """``text`` spoken as float32 (N,) at 16 kHz mono in [-1, 1]."""
    eng = engine()
    pcm = eng.synth(text, voice, rate, pitch)
    return resample(pcm.astype(np.float32) / 32768.0, eng.rate, TARGET_RATE)


def sample_voice(rng: random.Random) -> dict:
    """A voice, speaking rate and pitch drawn from the sample's rng (part of the sample's record)."""
    return {"voice": rng.choice(VOICES), "rate": rng.randint(*RATE_RANGE), "pitch": rng.randint(*PITCH_RANGE)}
