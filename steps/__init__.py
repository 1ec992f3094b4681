"""ZenML steps: thin glue over the plain modules in ``corpus/``, ``models/`` and ``serving/``."""

from steps.batch_inference import batch_generate, generations_report, load_prompts
from steps.clean_data import clean_data
from steps.data_report import data_report
from steps.deployment import build_bento, deploy_bento
from steps.evaluate import evaluate
from steps.evaluation_report import evaluation_report
from steps.ingest_data import ingest_data
from steps.load_preferences import load_preferences
from steps.load_real_tests import load_real_tests
from steps.monitoring import check_thresholds, load_traffic, monitoring_report
from steps.promote import promote
from steps.split_data import split_data
from steps.train_gan import train_gan
from steps.train_seq2seq import train_seq2seq
from steps.train_tokenizer import train_tokenizer
from steps.train_transformer import train_transformer

__all__ = [
    "batch_generate",
    "build_bento",
    "check_thresholds",
    "clean_data",
    "data_report",
    "deploy_bento",
    "evaluate",
    "evaluation_report",
    "generations_report",
    "ingest_data",
    "load_preferences",
    "load_prompts",
    "load_real_tests",
    "load_traffic",
    "monitoring_report",
    "promote",
    "split_data",
    "train_gan",
    "train_seq2seq",
    "train_tokenizer",
    "train_transformer",
]
