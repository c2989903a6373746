"""Tests of cloudctl.executor: inventory, events, the fake and the real Ansible executor."""
