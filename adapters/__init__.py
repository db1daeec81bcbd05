"""Adapters that carry a ``sansflow.Flow`` over a real transport, all with one API.

``sansflow.adapters.asyncio``, ``sansflow.adapters.trio`` and ``sansflow.adapters.socket``:
switching event loop means changing one import.
"""
