# Man pages, linted by `make check`.
