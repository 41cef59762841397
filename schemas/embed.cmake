# Writes OUT, a C++ source defining pitlane::internal::kDefaultCatalogText from the file IN.
file(READ ${IN} text)
file(WRITE ${OUT} "// generated from schemas/catalog.txt; do not edit\n#include <string_view>\nnamespace pitlane::internal {\nextern const std::string_view kDefaultCatalogText;\nconst std::string_view kDefaultCatalogText = R\"pitlane_catalog(${text})pitlane_catalog\";\n}  // namespace pitlane::internal\n")
