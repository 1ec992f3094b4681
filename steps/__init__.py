"""ZenML steps: thin glue over the plain modules in ``corpus/``, ``models/`` and ``serving/``."""

from steps.clean_data import clean_data
from steps.data_report import data_report
from steps.evaluate import evaluate
from steps.evaluation_report import evaluation_report
from steps.ingest_data import ingest_data
from steps.promote import promote
from steps.split_data import split_data
from steps.train_gan import train_gan
from steps.train_seq2seq import train_seq2seq
from steps.train_tokenizer import train_tokenizer
from steps.train_transformer import train_transformer

__all__ = [
    "clean_data", "data_report", "evaluate", "evaluation_report", "ingest_data", "promote", "split_data",
    "train_gan", "train_seq2seq", "train_tokenizer", "train_transformer",
]
