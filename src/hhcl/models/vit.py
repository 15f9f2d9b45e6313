"""ViT-S/16 (Dosovitskiy et al., ICLR 2021) as a re-ID backbone, with TransReID's overlapping patches as an option.

The parameter names are those of timm's ``vit_small_patch16_224`` (and of DeiT-S and TransReID's
``deit_small_patch16_224_TransReID``, which share them): ``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`` and ``norm``;
so their checkpoints load as is through :func:`hhcl.models.load_weights`, which skips the ImageNet
``head`` and resizes ``pos_embed`` to this model's patch grid (:meth:`VisionTransformer.adapt_checkpoint`).
TransReID's ``vit_small_patch16_224_TransReID`` is another network (768-d, 8 blocks, no qkv bias)
and does not load here; nor do TransReID's trained re-ID models as they are, which keep the
backbone under ``base.`` (remove that prefix first).

The feature is the class token after the final LayerNorm (384-d). ``patch_stride`` 12 instead of
16 makes the 16x16 patches overlap, as TransReID does (a 21x10 grid for 256x128 images instead of
16x8); the patch projection keeps its 16x16 kernel, so the same checkpoints load.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# Layer sizes of ViT-S/16, as in timm's vit_small_patch16_224.
VIT_CONFIGS: dict[str, dict[str, int]] = {
    "vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 6, "mlp_ratio": 4, "patch_size": 16},
}
# The image size whose patch grid ``pos_embed`` is stored for: the usual re-ID input.
DEFAULT_IMAGE_SIZE = (256, 128)
# The class token is the one position embedding that is not on the patch grid.
NUM_PREFIX_TOKENS = 1


def patch_grid(image_size: tuple[int, int], patch_size: int, patch_stride: int) -> tuple[int, int]:
    """``(rows, columns)`` of patches that a ``patch_size`` convolution at ``patch_stride`` lays over ``image_size``."""
    height, width = image_size
    return (height - patch_size) // patch_stride + 1, (width - patch_size) // patch_stride + 1


def checkpoint_grid(num_patches: int, target_grid: tuple[int, int]) -> tuple[int, int]:
    """The patch grid a checkpoint's ``pos_embed`` of ``num_patches`` positions was stored for.

    A square count is read as a square grid (ImageNet checkpoints: 14x14 for 224x224); any other
    count as its factorisation whose shape is closest to ``target_grid``'s (a re-ID checkpoint
    trained on 256x128 images: 16x8, or 21x10 with overlapping patches).
    """
    side = math.isqrt(num_patches)
    if side * side == num_patches:
        return side, side
    target_ratio = math.log(target_grid[0] / target_grid[1])
    factorisations = [(rows, num_patches // rows) for rows in range(1, num_patches + 1) if num_patches % rows == 0]
    return min(factorisations, key=lambda grid: abs(math.log(grid[0] / grid[1]) - target_ratio))


def resize_pos_embed(pos_embed: torch.Tensor, source_grid: tuple[int, int],
                     target_grid: tuple[int, int]) -> torch.Tensor:
    """``(1, 1 + h*w, D)`` position embeddings on ``source_grid`` ``(h, w)`` -> ``(1, 1 + H*W, D)`` on ``target_grid``.

    The patch positions are interpolated bicubically as a ``(D, h, w)`` image (in float32); the
    class token's embedding is kept as it is.
    """
    if tuple(source_grid) == tuple(target_grid):
        return pos_embed
    prefix, patches = pos_embed[:, :NUM_PREFIX_TOKENS], pos_embed[:, NUM_PREFIX_TOKENS:]
    dim = pos_embed.shape[-1]
    as_image = patches.float().reshape(1, source_grid[0], source_grid[1], dim).permute(0, 3, 1, 2)
    resized = F.interpolate(as_image, size=tuple(target_grid), mode="bicubic", align_corners=False)
    resized = resized.permute(0, 2, 3, 1).reshape(1, target_grid[0] * target_grid[1], dim).to(pos_embed.dtype)
    return torch.cat([prefix, resized], dim=1)


class PatchEmbed(nn.Module):
    """``(B, 3, H, W) -> (B, D, rows, columns)``: one ``patch_size`` convolution at ``patch_stride``."""

    def __init__(self, patch_size: int, patch_stride: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images)


class Attention(nn.Module):
    """Multi-head self-attention: ``(B, N, D) -> (B, N, D)``, one ``qkv`` projection and one output ``proj``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, dim = tokens.shape
        # (B, N, 3D) -> 3 x (B, heads, N, D / heads)
        query, key, value = (self.qkv(tokens).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
                             .permute(2, 0, 3, 1, 4).unbind(0))
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.proj(attended.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    """``(B, N, D) -> (B, N, D)``: Linear to ``hidden``, GELU, Linear back."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(tokens)))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attn(self.norm1(tokens))
        return tokens + self.mlp(self.norm2(tokens))


class VisionTransformer(nn.Module):
    """A ViT whose feature is the class token after the final norm.

    ``forward_tokens``: ``(B, 3, H, W) -> (B, 1 + rows*columns, embed_dim)``, the class token first;
    ``forward_features``: ``(B, 3, H, W) -> (B, embed_dim, 1, 1)``, the class token as a 1x1 map, so
    that the re-ID head's average pooling passes it through; ``forward_pooled`` is the identity.

    ``pos_embed`` is stored for the patch grid of ``image_size``; images of another size get it
    interpolated (bicubic) to their grid at each forward pass.
    """

    def __init__(self, embed_dim: int = 384, depth: int = 12, num_heads: int = 6, mlp_ratio: int = 4,
                 patch_size: int = 16, patch_stride: int = 16,
                 image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE):
        super().__init__()
        if not 1 <= patch_stride <= patch_size:
            raise ValueError(f"patch_stride must lie in 1..{patch_size} (patches may overlap, not leave gaps), "
                             f"got {patch_stride}")
        self.patch_size, self.patch_stride = patch_size, patch_stride
        self.grid = patch_grid(image_size, patch_size, patch_stride)
        self.patch_embed = PatchEmbed(patch_size, patch_stride, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, NUM_PREFIX_TOKENS + self.grid[0] * self.grid[1], embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._initialise()

    def _initialise(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    @property
    def feature_dim(self) -> int:
        return self.norm.normalized_shape[0]

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """``(1, 1 + rows*columns, D)``: ``pos_embed``, interpolated when ``grid`` is not the stored one."""
        return resize_pos_embed(self.pos_embed, self.grid, grid)

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, 1 + rows*columns, D)`` tokens after the final norm."""
        patches = self.patch_embed(images)
        grid = (patches.shape[2], patches.shape[3])
        tokens = patches.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.position_embedding(grid)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, D, 1, 1)``: the class token as a one-position map."""
        return self.forward_tokens(images)[:, 0, :, None, None]

    def forward_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """The pooled class token ``(B, D)`` is the feature as it is."""
        return pooled

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)

    def adapt_checkpoint(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The tensors of a checkpoint (this model's names) that need changing to fit it, and a note on each.

        ``pos_embed`` stored for another patch grid (14x14 in a 224x224 ImageNet checkpoint) is
        interpolated to this model's grid, the class token's embedding kept. A distilled DeiT file
        (TransReID's starting point for DeiT-S) holds a second token, ``dist_token``, whose
        position embedding is dropped; the token itself is skipped by the loader.
        """
        pos_embed = state.get("pos_embed")
        if pos_embed is None or tuple(pos_embed.shape) == tuple(self.pos_embed.shape):
            return {}, []
        prefix_tokens = NUM_PREFIX_TOKENS + ("dist_token" in state)
        if pos_embed.dim() != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[2] != self.pos_embed.shape[2] or \
                pos_embed.shape[1] <= prefix_tokens:
            return {}, []  # not a position embedding of this width: the loader names the shapes
        note = ""
        if prefix_tokens > NUM_PREFIX_TOKENS:
            pos_embed = torch.cat([pos_embed[:, :NUM_PREFIX_TOKENS], pos_embed[:, prefix_tokens:]], dim=1)
            note = ", the distillation token's position dropped"
        source = checkpoint_grid(pos_embed.shape[1] - NUM_PREFIX_TOKENS, self.grid)
        note = f"pos_embed {source[0]}x{source[1]} -> {self.grid[0]}x{self.grid[1]}{note}"
        return {"pos_embed": resize_pos_embed(pos_embed, source, self.grid)}, [note]


def vit(name: str, patch_stride: int = 16) -> VisionTransformer:
    """The ViT called ``name`` (one of :data:`VIT_CONFIGS`), randomly initialised, for 256x128 images."""
    return VisionTransformer(**VIT_CONFIGS[name], patch_stride=patch_stride)
