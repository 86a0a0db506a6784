"""Framing, decoding and encoding of tracker protocols. No I/O happens here."""

from postloan.protocols.base import DecodeError, EncodeError, Location, Message

__all__ = ["DecodeError", "EncodeError", "Location", "Message"]
