"""Pieces that run configs use (not run configs themselves): where the ../shared copies are
(`shared.py`), the digits classifier's settings (`digits_classifier.py`)."""
