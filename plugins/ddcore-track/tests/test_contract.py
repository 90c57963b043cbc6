"""ddcore's plugin kit on this package: every component passes the contract; the sources import public API only."""

from ddcore.testing import contract_tests

test_ddcore_contract = contract_tests("ddcore-track")
