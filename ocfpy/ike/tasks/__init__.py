"""IKEv2 exchanges as small tasks (strongSwan's sa/ikev2/tasks/)."""
