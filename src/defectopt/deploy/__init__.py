"""`defectopt export`: a chosen model -> a self-contained deployment bundle (model file(s) plus
`bundle.json`), read by `defectopt.runtime` on a PC without the training stack."""
