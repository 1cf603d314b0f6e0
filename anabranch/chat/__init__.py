"""Serve graphs as OpenAI-compatible chat models."""

from anabranch.chat.adapters import AnalyzeChat, ChainChat, ChatGraph, MessagesChat
from anabranch.chat.app import create_app

__all__ = ["AnalyzeChat", "ChainChat", "ChatGraph", "MessagesChat", "create_app"]
