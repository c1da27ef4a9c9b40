"""Soft knowledge distillation: losses, the teachers, cached teacher outputs."""

from .cache import TeacherCache, build_teacher_cache
from .losses import DistillationLoss, SoftKDLoss, class_balanced_pos_weight, masked_bce_with_logits
from .mapping import no_finding_logit, xrv_to_chexpert
from .teacher import ModelTeacher, Teacher, XRVTeacher, load_teacher

__all__ = [
    "DistillationLoss",
    "ModelTeacher",
    "SoftKDLoss",
    "Teacher",
    "TeacherCache",
    "XRVTeacher",
    "build_teacher_cache",
    "class_balanced_pos_weight",
    "load_teacher",
    "masked_bce_with_logits",
    "no_finding_logit",
    "xrv_to_chexpert",
]
