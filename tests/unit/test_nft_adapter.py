"""The nft adapter's errors for a run that did not end by itself (no kernel table involved:
the command line is a shell that stands in for nft)."""

from __future__ import annotations

import asyncio

import pytest

from director.network.nft import Nft, NftError


def test_an_nft_killed_by_a_signal_says_which_signal_and_what_was_being_done() -> None:
    """A Ctrl-C reaches the daemon's whole process group, nft included: the error says so
    instead of "nft failed without a message"."""
    nft = Nft(("sh", "-c", "kill -TERM $$", "nft"))
    with pytest.raises(NftError) as caught:
        asyncio.run(nft.list_table("director"))
    assert str(caught.value) == "reading table inet director: nft was killed by SIGTERM"


def test_an_nft_that_fails_silently_still_says_what_was_being_done() -> None:
    nft = Nft(("sh", "-c", "exit 3", "nft"))
    with pytest.raises(NftError) as caught:
        asyncio.run(nft.apply([{"add": {"table": {"family": "inet", "name": "d"}}}], "applying"))
    assert str(caught.value) == "applying: nft failed without a message"
