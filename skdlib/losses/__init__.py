"""Distillation and task losses as pure functions (plus the critic's gradient penalty).

- pixel-wise (Eq. 1): :func:`pixelwise_kd_loss`, :func:`pixelwise_kl_map`
- pair-wise (Eq. 2-3): :func:`pairwise_similarity_loss`, :func:`pairwise_similarity_map`,
  :func:`pool_nodes`, :func:`node_grid`
- holistic (Eq. 4): :func:`holistic_critic_loss`, :func:`holistic_generator_loss`,
  :func:`gradient_penalty`
- variants: :func:`mimic_loss`, :func:`make_mimic_adapter`, :func:`attention_transfer_loss`,
  :func:`local_pairwise_loss`
- task: :func:`segmentation_task_loss`, :func:`cross_entropy_2d`
- later methods, for comparisons: :func:`cwd_loss` (channel-wise distillation, Shu et al.,
  ICCV 2021), :func:`dist_loss` (DIST, Huang et al., NeurIPS 2022)
"""

from skdlib.losses.channelwise import cwd_loss
from skdlib.losses.correlation import dist_loss
from skdlib.losses.holistic import gradient_penalty, holistic_critic_loss, holistic_generator_loss
from skdlib.losses.pairwise import (
    node_grid,
    pairwise_similarity_loss,
    pairwise_similarity_map,
    pool_nodes,
)
from skdlib.losses.pixelwise import pixelwise_kd_loss, pixelwise_kl_map
from skdlib.losses.task import cross_entropy_2d, segmentation_task_loss
from skdlib.losses.variants import (
    attention_transfer_loss,
    local_pairwise_loss,
    make_mimic_adapter,
    mimic_loss,
)

__all__ = [
    "attention_transfer_loss",
    "cross_entropy_2d",
    "cwd_loss",
    "dist_loss",
    "gradient_penalty",
    "holistic_critic_loss",
    "holistic_generator_loss",
    "local_pairwise_loss",
    "make_mimic_adapter",
    "mimic_loss",
    "node_grid",
    "pairwise_similarity_loss",
    "pairwise_similarity_map",
    "pixelwise_kd_loss",
    "pixelwise_kl_map",
    "pool_nodes",
    "segmentation_task_loss",
]
