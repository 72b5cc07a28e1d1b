// Placeholder: the dashboard's script replaces this file.
"use strict";
