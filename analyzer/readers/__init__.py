"""Readers: foreign and recorded traces in, canonical tables (``analyzer.schema``) out.

Each reader names the file, line or record and field of what it cannot read
(``analyzer.errors.TraceError``); nothing past the readers touches raw bytes or text formats."""
