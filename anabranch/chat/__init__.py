"""Serve graphs as OpenAI-compatible chat models."""

from anabranch.chat.adapters import ChainChat, ChatGraph, FanoutChat, MessagesChat
from anabranch.chat.agent_chat import AgentChat
from anabranch.chat.app import create_app

__all__ = ["AgentChat", "ChainChat", "ChatGraph", "FanoutChat", "MessagesChat", "create_app"]
