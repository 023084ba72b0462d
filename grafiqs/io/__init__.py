"""The ground floor: the program's own files and every file it reads.

`ledger` (folders the program writes into: the ledger of what it wrote there, the lock),
`atomic` (writes that readers never see half done), `score_files` (the `<path> <score>` and CSV
formats) and `reading` (the regular-file / size / non-blocking check of every file the program
opens). Nothing here imports from another grafiqs package but `grafiqs.errors`.
"""
