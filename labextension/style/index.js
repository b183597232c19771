import './base.css';
import './iterate.css';
