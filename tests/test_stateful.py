"""The core under hypothesis: both ends of a pair and the wire, checked against the model."""

from __future__ import annotations

from sansflow.testing.stateful import FlowStateMachine

TestFlow = FlowStateMachine.TestCase
