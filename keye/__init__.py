"""Keye-VL's conventions shared by curation, the mixture and the trainer: tokenizer, chat layout."""
