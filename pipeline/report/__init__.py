"""Layer 9, report: tables, figures and the deletion audit."""
