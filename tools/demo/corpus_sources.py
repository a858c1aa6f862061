"""Sources of the demo corpus: real recordings, speech synthesizers, rendered MIDI and recorded
samples from Debian packages, each with a numpy fallback (or an honest skip) when missing.

Every ``make_*`` function takes a clip count and a seeded ``numpy`` generator and returns
``(clips, fallbacks)``: the clips, and one line per thing it could not do as intended.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from audistill.tools.demo import corpus_audio as au
from audistill.tools.demo.corpus_audio import SAMPLE_RATE as SR

# Where the Debian packages put their files (module attributes so tests can point them elsewhere).
ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SONIC_PI_SAMPLES = Path("/usr/share/sonic-pi/samples")
FREEDESKTOP_SOUNDS = Path("/usr/share/sounds/freedesktop/stereo")
OXYGEN_SOUNDS = Path("/usr/share/sounds")

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# (engine, voice) pairs; the label is "<engine>-<voice>" made key-safe.
# Every voice both packages ship (flite's five; espeak-ng's accents, each with its own variant).
VOICES = (
    ("espeak-ng", "en-us+m1"),
    ("espeak-ng", "en-us+f2"),
    ("espeak-ng", "en-gb-scotland+m3"),
    ("espeak-ng", "en-029+f4"),
    ("espeak-ng", "en-gb-x-rp+m2"),
    ("espeak-ng", "en-us-nyc+f3"),
    ("espeak-ng", "en-gb-x-gbclan+m4"),
    ("espeak-ng", "en-gb-x-gbcwmd+f1"),
    ("espeak-ng", "en+m7"),
    ("espeak-ng", "en-us+f5"),
    ("espeak-ng", "en-gb+klatt"),
    ("flite", "awb"),
    ("flite", "rms"),
    ("flite", "slt"),
    ("flite", "kal16"),
    ("flite", "kal"),
)
# General MIDI program families used (program numbers) and a playable range (MIDI notes).
GM_FAMILIES: dict[str, tuple[tuple[int, ...], tuple[int, int]]] = {
    "piano": ((0, 1, 2, 3, 4, 5, 6, 7), (40, 84)),
    "organ": ((16, 17, 18, 19, 20, 21, 22, 23), (40, 80)),
    "guitar": ((24, 25, 26, 27, 28, 29, 30), (40, 72)),
    "bass": ((32, 33, 34, 35, 36, 37, 38, 39), (28, 52)),
    "strings": ((40, 41, 42, 44, 45, 46, 48, 49), (48, 76)),
    "brass": ((56, 57, 58, 59, 60, 61, 62, 63), (45, 72)),
    "reed": ((64, 65, 66, 67, 68, 69, 70, 71), (50, 77)),
    "pipe": ((72, 73, 74, 75, 76, 77, 78, 79), (60, 86)),
}
# sound category -> (folder attribute, glob patterns)
SOUND_CATEGORIES: dict[str, tuple[tuple[str, str], ...]] = {
    "kick": (
        ("sonic", "bd_*.flac"),
        ("sonic", "drum_heavy_kick.flac"),
        ("sonic", "drum_bass_*.flac"),
        ("sonic", "elec_*kick.flac"),
    ),
    "snare": (
        ("sonic", "sn_*.flac"),
        ("sonic", "drum_snare_*.flac"),
        ("sonic", "elec_*snare.flac"),
    ),
    "cymbal": (
        ("sonic", "drum_cymbal_*.flac"),
        ("sonic", "drum_splash_*.flac"),
        ("sonic", "elec_cymbal.flac"),
    ),
    "tom": (("sonic", "drum_tom_*.flac"), ("sonic", "elec_fuzz_tom.flac")),
    "tabla": (("sonic", "tabla_*.flac"),),
    "ambient": (("sonic", "ambi_[!p]*.flac"),),
    "electronic": tuple(
        ("sonic", f"elec_{n}.flac")
        for n in (
            "beep",
            "bell",
            "blip",
            "blip2",
            "blup",
            "bong",
            "chime",
            "flip",
            "ping",
            "plip",
            "pop",
            "tick",
            "triangle",
            "twang",
            "twip",
            "wood",
        )
    ),
    "alert": (
        ("freedesktop", "[!a]*.oga"),
        ("freedesktop", "alarm*.oga"),
        ("oxygen", "Oxygen-*.ogg"),
    ),
}


@dataclass
class Clip:
    """One clip before it is written: 16 kHz mono float32 audio and its labels."""

    key: str
    domain: str
    dataset: str
    audio: np.ndarray  # (N,) float32 at 16 kHz
    labels: dict[str, str]
    frame_labels: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)
    source: str = ""
    group: str = ""  # clips of one group are variants of one recording; "" = the clip alone


def safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "-" for c in text).strip("-")


def _finish(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random loudness plus a faint noise floor: what every clip gets before it is written."""
    return au.set_loudness(x, rng) + au.noise_floor(len(x), rng)


def _balanced_pairs(n: int, a: int, b: int) -> list[tuple[int, int]]:
    """n pairs (i, j), i < a, j < b, each margin as even as possible and all pairs used in turn."""
    lcm = a * b // math.gcd(a, b)
    return [(k % a, (k + k // lcm) % b) for k in range(n)]


def _map_parallel(fn: Callable, items: Sequence) -> list:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(fn, items))


# ---------------------------------------------------------------------------------------------
# Speech


def available_voices() -> list[tuple[str, str]]:
    return [(eng, v) for eng, v in VOICES if shutil.which(eng)]


def voice_label(engine: str, voice: str) -> str:
    return safe(f"{engine.split('-')[0]}-{voice}")


def synthesize(engine: str, voice: str, text: str, speed: float, tmp: Path) -> np.ndarray:
    """Speak ``text``; ``speed`` > 1 is faster. Returns 16 kHz mono float32."""
    if engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", voice, "-s", str(int(170 * speed)), "--stdout", text]
        out = subprocess.run(cmd, check=True, capture_output=True).stdout
        x, sr = sf.read(io.BytesIO(out), dtype="float32", always_2d=True)
        return au.resample(x.mean(axis=1), sr)
    if engine == "flite":
        path = tmp / f"flite-{voice}-{safe(text)}-{speed:.3f}.wav"
        subprocess.run(
            [
                "flite",
                "-voice",
                voice,
                "-t",
                text,
                "-o",
                str(path),
                "--setf",
                f"duration_stretch={1 / speed:.3f}",
            ],
            check=True,
            capture_output=True,
        )
        return au.load_mono(path)
    raise ValueError(f"unknown speech engine {engine!r}")


def make_words(n: int, rng: np.random.Generator, tmp: Path) -> tuple[list[Clip], list[str]]:
    """Spoken command words, each by one of several synthetic voices: labels word and voice."""
    voices = available_voices()
    if not voices:
        return [], ["no speech synthesizer (espeak-ng, flite): word and voice tasks skipped"]
    notes = []
    missing = sorted({eng for eng, _ in VOICES} - {eng for eng, _ in voices})
    if missing:
        notes.append(
            f"speech synthesizer(s) not found: {', '.join(missing)}; "
            f"word/voice tasks use {len(voices)} voice(s) only"
        )
    pairs = _balanced_pairs(n, len(WORDS), len(voices))
    speeds = rng.uniform(0.85, 1.2, size=n)

    def one(k: int) -> np.ndarray:
        w, v = pairs[k]
        return au.trim(synthesize(*voices[v], WORDS[w], float(speeds[k]), tmp))

    clips = []
    for k, x in enumerate(_map_parallel(one, range(n))):
        w, v = pairs[k]
        length = max(int(1.0 * SR), len(x) + int(0.2 * SR))
        x = au.fit_length(
            x, length, int(rng.integers(int(0.05 * SR), length - len(x) - int(0.05 * SR) + 1))
        )
        labels = {"word": WORDS[w], "domain": "speech"}
        if len(voices) >= 2:
            labels["voice"] = voice_label(*voices[v])
        clips.append(
            Clip(
                f"speech-word-{k:05d}",
                "speech",
                voices[v][0].split("-")[0],
                _finish(x, rng),
                labels,
                source=f"{voices[v][0]}:{voices[v][1]}:{WORDS[w]}",
                group=safe(f"{voices[v][0]}-{voices[v][1]}-{WORDS[w]}"),
            )
        )
    return clips, notes


def asterisk_speakers() -> dict[str, Path]:
    """language -> folder of one real speaker (e.g. en -> en_US_f_Allison)."""
    out: dict[str, Path] = {}
    if ASTERISK_ROOT.is_dir():
        for d in sorted(ASTERISK_ROOT.glob("??_??_[fm]_*")):
            if d.is_dir() and not d.is_symlink():
                out.setdefault(d.name[:2], d)
    return out


def _asterisk_files(folder: Path, lo: float, hi: float) -> list[Path]:
    files = sorted(folder.rglob("*.wav"))
    return [f for f in files if lo <= sf.info(str(f)).duration <= hi]


def make_language(n_per: int, rng: np.random.Generator) -> tuple[list[Clip], list[str]]:
    """Real recorded telephone prompts (asterisk), one speaker per language: label language."""
    speakers = asterisk_speakers()
    if len(speakers) < 2:
        return [], [
            f"asterisk prompts found for {len(speakers)} language(s) (need 2+): language task "
            "skipped"
        ]
    clips = []
    for lang, folder in speakers.items():
        files = _asterisk_files(folder, 1.0, 3.5)
        for j, i in enumerate(rng.permutation(len(files))[:n_per]):
            x = au.load_mono(files[i])
            clips.append(
                Clip(
                    f"speech-lang-{lang}-{j:04d}",
                    "speech",
                    f"asterisk-{lang}",
                    _finish(x, rng),
                    {"language": lang, "domain": "speech"},
                    source=f"asterisk/{folder.name}/{files[i].relative_to(folder)}",
                )
            )
    return clips, []


def _speech_segments(
    n: int, rng: np.random.Generator, tmp: Path
) -> tuple[list[tuple[np.ndarray, str, str]], str]:
    """n short trimmed speech segments: (audio, dataset, source), real if possible."""
    speakers = asterisk_speakers()
    if speakers:
        pool = [(lang, f) for lang, d in speakers.items() for f in _asterisk_files(d, 0.4, 1.6)]
        picks = rng.choice(len(pool), size=n, replace=len(pool) < n)
        return [
            (au.trim(au.load_mono(pool[i][1])), f"asterisk-{pool[i][0]}", str(pool[i][1].name))
            for i in picks
        ], ""
    voices = available_voices()
    if voices:
        out = []
        for k in range(n):
            eng, v = voices[k % len(voices)]
            w = WORDS[int(rng.integers(len(WORDS)))]
            out.append(
                (au.trim(synthesize(eng, v, w, 1.0, tmp)), eng.split("-")[0], f"{eng}:{v}:{w}")
            )
        return out, "no recorded speech (asterisk): activity task uses synthesized words"
    return [], "no recorded or synthesized speech: activity task skipped"


def make_activity(
    n: int, rng: np.random.Generator, tmp: Path, length_s: float = 4.0
) -> tuple[list[Clip], list[str]]:
    """Speech segments placed in faint noise: frame labels activity = speech | silence."""
    segs, note = _speech_segments(2 * n, rng, tmp)
    if not segs:
        return [], [note]
    total = int(length_s * SR)
    clips = []
    for k in range(n):
        x = np.zeros(total, np.float32)
        t = int(rng.uniform(0.2, 0.9) * SR)
        intervals: list[tuple[float, float, str]] = []
        for seg, _, _ in segs[2 * k : 2 * k + 2]:
            if t + len(seg) > total - int(0.2 * SR):
                break
            x[t : t + len(seg)] = au.set_loudness(seg, rng)
            intervals.append((t / SR, (t + len(seg)) / SR, "speech"))
            t += len(seg) + int(rng.uniform(0.3, 0.9) * SR)
        frame = _fill_gaps(intervals, length_s, "silence")
        clips.append(
            Clip(
                f"speech-activity-{k:04d}",
                "speech",
                segs[2 * k][1],
                _finish(x, rng),
                {"domain": "speech"},
                {"activity": frame},
                source=segs[2 * k][2],
            )
        )
    return clips, [note] if note else []


def _fill_gaps(
    intervals: list[tuple[float, float, str]], length: float, label: str
) -> list[tuple[float, float, str]]:
    out, t = [], 0.0
    for a, b, lab in intervals:
        if a > t:
            out.append((round(t, 4), round(a, 4), label))
        out.append((round(a, 4), round(b, 4), lab))
        t = b
    if t < length:
        out.append((round(t, 4), round(length, 4), label))
    return out


# ---------------------------------------------------------------------------------------------
# Music


@dataclass
class Phrase:
    """A monophonic phrase for one GM program: notes (onset s, offset s, midi note, velocity)."""

    family: str
    program: int
    notes: list[tuple[float, float, int, int]]
    length: float


def _note_plan(n: int, rng: np.random.Generator) -> list[Phrase]:
    """Single notes: family and pitch class both balanced (n a multiple of 24 is exact)."""
    fams = list(GM_FAMILIES)
    out = []
    for i in range(n):
        f = i % len(fams)
        pc = (i // len(fams) + 3 * f) % 12
        progs, (lo, hi) = GM_FAMILIES[fams[f]]
        note = int(rng.choice([m for m in range(lo, hi + 1) if m % 12 == pc]))
        out.append(
            Phrase(
                fams[f],
                int(rng.choice(progs)),
                [(0.05, 0.85, note, int(rng.integers(80, 111)))],
                1.25,
            )
        )
    return out


def _melody_plan(n: int, rng: np.random.Generator, length: float = 4.0) -> list[Phrase]:
    fams = list(GM_FAMILIES)
    out = []
    for i in range(n):
        fam = fams[i % len(fams)]
        progs, (lo, hi) = GM_FAMILIES[fam]
        note, t, notes = int(rng.integers(lo + 4, hi - 4)), 0.15, []
        while t < length - 0.45:
            dur = float(rng.choice([0.25, 0.35, 0.5, 0.7]))
            end = min(t + dur, length - 0.2)
            notes.append((round(t, 3), round(end, 3), note, int(rng.integers(80, 111))))
            t = end + float(rng.choice([0.0, 0.05, 0.1]))
            step = int(rng.choice([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5]))
            note = note + step if lo <= note + step <= hi else note - step
        out.append(Phrase(fam, int(rng.choice(progs)), notes, length))
    return out


def _write_midi(phrases: Sequence[Phrase], path: Path, spacing: float) -> list[float]:
    """All phrases one after another on channel 0; returns each phrase's start time (s)."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)  # with 120 bpm: 960 ticks per second
    track = mido.MidiTrack()
    mid.tracks.append(track)
    events: list[tuple[float, int, object]] = []  # (time s, order, message)
    starts = []
    for i, ph in enumerate(phrases):
        t0 = 1.0 + i * spacing
        starts.append(t0)
        events.append(
            (t0 - 0.6, 0, mido.Message("control_change", control=120, value=0))
        )  # all sound off
        events.append((t0 - 0.5, 1, mido.Message("program_change", program=ph.program)))
        for on, off, note, vel in ph.notes:
            events.append((t0 + off, 2, mido.Message("note_off", note=note, velocity=0)))
            events.append((t0 + on, 3, mido.Message("note_on", note=note, velocity=vel)))
    events.sort(key=lambda e: (e[0], e[1]))
    now = 0
    for t, _, msg in events:
        tick = int(round(t * 960))
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=int(round(spacing * 960))))
    mid.save(str(path))
    return starts


def _render_fluidsynth(phrases: Sequence[Phrase], tmp: Path, name: str) -> list[np.ndarray]:
    """Render phrases through fluidsynth + FluidR3_GM in two parallel batches; cut each out."""
    spacing = max(p.length for p in phrases) + 1.5
    half = (len(phrases) + 1) // 2
    batches = [phrases[:half], phrases[half:]]

    def render(b: int) -> list[np.ndarray]:
        if not batches[b]:
            return []
        mid, wav = tmp / f"{name}-{b}.mid", tmp / f"{name}-{b}.wav"
        starts = _write_midi(batches[b], mid, spacing)
        subprocess.run(
            [
                "fluidsynth",
                "-ni",
                "-q",
                "-R",
                "0",
                "-C",
                "0",
                "-O",
                "float",
                "-F",
                str(wav),
                "-r",
                str(SR),
                str(SOUNDFONT),
                str(mid),
            ],
            check=True,
            capture_output=True,
        )
        y, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        y = au.resample(y.mean(axis=1), sr)
        return [
            au.fit_length(y[int(t * SR) :], int(p.length * SR))
            for t, p in zip(starts, batches[b], strict=True)
        ]

    a, b = _map_parallel(render, [0, 1])
    return a + b


def _render_numpy(phrases: Sequence[Phrase], rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for ph in phrases:
        x = np.zeros(int(ph.length * SR), np.float32)
        for on, off, note, vel in ph.notes:
            y = (
                au.synth_note(ph.family, note, off - on, min(off - on + 0.3, ph.length - on), rng)
                * vel
                / 127
            )
            i = int(on * SR)
            x[i : i + len(y)] += y[: len(x) - i]
        out.append(x)
    return out


def music_backend() -> tuple[str, str]:
    """("fluidsynth-gm", "") when fluidsynth, the soundfont and mido are there; else the
    fallback."""
    missing = [
        what
        for what, ok in (
            ("fluidsynth", shutil.which("fluidsynth")),
            (str(SOUNDFONT), SOUNDFONT.is_file()),
            ("mido (PyPI)", _has_mido()),
        )
        if not ok
    ]
    if not missing:
        return "fluidsynth-gm", ""
    return "numpy-synth", (
        f"{', '.join(missing)} not found: music rendered by numpy additive synthesis "
        "(harmonic profile + ADSR per instrument family) instead of sampled instruments"
    )


def _has_mido() -> bool:
    try:
        import mido  # noqa: F401
    except ImportError:
        return False
    return True


def make_music(
    n_notes: int, n_melodies: int, rng: np.random.Generator, tmp: Path
) -> tuple[list[Clip], list[str]]:
    """Single notes (instrument_family, pitch_class) and melodies (frame pitch_class)."""
    backend, note = music_backend()
    notes, melodies = _note_plan(n_notes, rng), _melody_plan(n_melodies, rng)
    phrases = notes + melodies
    if backend == "fluidsynth-gm":
        audio = _render_fluidsynth(phrases, tmp, "music")
    else:
        audio = _render_numpy(phrases, rng)
    clips = []
    for k, (ph, x) in enumerate(zip(phrases, audio, strict=True)):
        labels = {"instrument_family": ph.family, "domain": "music"}
        src = f"gm-program-{ph.program}"
        if k < len(notes):
            labels["pitch_class"] = au.pitch_class(ph.notes[0][2])
            clips.append(
                Clip(f"music-note-{k:05d}", "music", backend, _finish(x, rng), labels, source=src)
            )
        else:
            frames = [(on, off, au.pitch_class(m)) for on, off, m, _ in ph.notes]
            clips.append(
                Clip(
                    f"music-melody-{k - len(notes):04d}",
                    "music",
                    backend,
                    _finish(x, rng),
                    labels,
                    {"pitch_class": frames},
                    source=src,
                )
            )
    return clips, [note] if note else []


# ---------------------------------------------------------------------------------------------
# Sound


def sound_sources() -> dict[str, list[tuple[str, Path]]]:
    """category -> [(dataset, file)] for the recorded samples present on this machine."""
    roots = {
        "sonic": ("sonic-pi", SONIC_PI_SAMPLES),
        "freedesktop": ("freedesktop", FREEDESKTOP_SOUNDS),
        "oxygen": ("oxygen", OXYGEN_SOUNDS),
    }
    out = {}
    for cat, patterns in SOUND_CATEGORIES.items():
        files: dict[Path, str] = {}
        for root_key, pattern in patterns:
            dataset, root = roots[root_key]
            if root.is_dir():
                for f in sorted(root.glob(pattern)):
                    files.setdefault(f, dataset)
        out[cat] = [(ds, f) for f, ds in sorted(files.items())]
    return out


def _cut_sound(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = au.trim(au.change_speed(x, float(rng.uniform(0.92, 1.08))), rel_db=-50)
    want = int(rng.uniform(1.0, 2.0) * SR)
    if len(x) > want:
        i = int(rng.integers(0, len(x) - want + 1))
        x = x[i : i + want].copy()
        fade = np.linspace(0, 1, 160, dtype=np.float32)  # 10 ms fades at the cut points
        x[:160] *= fade
        x[-160:] *= fade[::-1]
        return x
    return au.fit_length(x, max(len(x), int(1.0 * SR)), int(rng.integers(0, int(0.1 * SR))))


def make_sounds(n_per: int, rng: np.random.Generator) -> tuple[list[Clip], list[str]]:
    """Recorded samples (sonic-pi, freedesktop, oxygen) by category; synthetic noise classes
    else."""
    sources = {c: fs for c, fs in sound_sources().items() if len(fs) >= 2}
    notes = []
    dropped = sorted(set(SOUND_CATEGORIES) - set(sources))
    if len(sources) < 3:
        return _synthetic_sounds(n_per, rng), [
            "recorded samples (sonic-pi-samples, sound-theme-freedesktop, oxygen-sounds) not "
            "found: "
            f"sound_category uses {len(au.SYNTH_SOUNDS)} synthetic noise/tone classes instead"
        ]
    if dropped:
        notes.append(f"no recorded samples for sound categories {dropped}: left out")
    clips, cache = [], {}
    for cat, files in sources.items():
        order = rng.permutation(len(files))
        for j in range(n_per):
            ds, f = files[order[j % len(files)]]
            if f not in cache:
                cache[f] = au.load_mono(f, max_seconds=8.0)
            x = _cut_sound(cache[f], rng)
            clips.append(
                Clip(
                    f"sound-{cat}-{j:04d}",
                    "sound",
                    ds,
                    _finish(x, rng),
                    {"sound_category": cat, "domain": "sound"},
                    source=f"{ds}/{f.name}",
                    group=safe(f"{ds}-{f.stem}"),
                )
            )
    return clips, notes


def _synthetic_sounds(n_per: int, rng: np.random.Generator) -> list[Clip]:
    clips = []
    for cat in au.SYNTH_SOUNDS:
        for j in range(n_per):
            x = au.synth_sound(cat, float(rng.uniform(1.0, 2.0)), rng)
            clips.append(
                Clip(
                    f"sound-{cat.replace('_', '-')}-{j:04d}",
                    "sound",
                    "numpy-noise",
                    _finish(x, rng),
                    {"sound_category": cat, "domain": "sound"},
                    source=f"numpy:{cat}",
                )
            )
    return clips


def tempdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="audistill-corpus-")
