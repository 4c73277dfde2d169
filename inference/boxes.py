"""Box decoding and non-maximum suppression in plain torch (no torchvision)."""

from __future__ import annotations

import torch


def anchor_centres(height: int, width: int, stride: int, device=None) -> torch.Tensor:
    """Grid centres (x, y) of one feature level, row-major, as NanoDet places them.

    NanoDet puts a cell's centre at ``x * stride`` (no half-cell offset); its boxes were
    trained against that grid, so adding 0.5 would shift every box by half a stride.
    """
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack((xs.flatten(), ys.flatten()), dim=-1) * stride


def gfl_distances(reg: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Expected distance per side from GFL bin logits ``[..., 4 * (reg_max + 1)]``."""
    bins = reg.float().unflatten(-1, (4, reg_max + 1)).softmax(dim=-1)
    project = torch.arange(reg_max + 1, device=reg.device, dtype=torch.float32)
    return bins @ project


def distance_to_box(centres: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """(left, top, right, bottom) distances around centres → [x1, y1, x2, y2]."""
    return torch.cat((centres - distances[..., :2], centres + distances[..., 2:]), dim=-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of [N, 4] and [M, 4] boxes."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, best score first."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    overlaps = box_iou(boxes, boxes) > iou_threshold
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    # Candidates are few after the score threshold, so a loop over the IoU rows is cheap
    # and exactly greedy (unlike matrix-only approximations).
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    # Shift each class into its own region of the plane so one NMS pass serves all.
    offsets = classes.to(boxes.dtype) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)
