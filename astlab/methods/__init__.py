"""The methods, one module per family, each with its trainer hook: per-batch selection (ast, is, sb, topk, random),
epoch-level schedules (stale, infobatch and rs2, budget-matched full), reducible loss (rholoss)."""
