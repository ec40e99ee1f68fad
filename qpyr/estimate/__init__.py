"""Cost estimation for qpyr stores: provider price tables and cost arithmetic."""
