"""Diagnosis: from pair statistics to named failure modes. Pure: no sockets, no clock."""
