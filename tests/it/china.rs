//! Imports from Excel on Chinese Windows (GBK) and tables with Chinese names.
