"""Soft knowledge distillation: losses, the teachers, cached teacher outputs."""

from mxa.distill.cache import TeacherCache, build_teacher_cache
from mxa.distill.mapping import no_finding_logit, xrv_to_chexpert
from mxa.distill.teacher import ModelTeacher, Teacher, XRVTeacher, load_teacher
from mxa.losses import DistillationLoss, SoftKDLoss, class_balanced_pos_weight, masked_bce_with_logits

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
