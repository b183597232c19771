"""The ground floor every domain may import: errors, ids, the protocol's enums, workspace
confinement and the template sandbox. It imports nothing else of the package."""
